"""What the embedded engine's sampler is held to, and what it counts.

A base model asked a question may end its answer before it has said anything (an end-of-text
token, the newline that starts every turn marker, an image marker). ``Tally``, a llama.cpp
logits processor run on the engine thread, forbids those tokens until the answer has printed
something, and counts the prompt's and the answer's tokens as it sees each sampling step.
``Vocabulary`` is what that rule needs to know of the model's tokens, read once per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from passerelle.providers.base import Usage
from passerelle.providers.local_framing import TRANSCRIPT_STOPS


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What the first-token rule needs to know of the model's tokens."""

    blank: frozenset[int]  # print nothing but whitespace (spaces, newlines, control tokens)
    # would end a blank answer: end-of-text, control, a leading newline, or a stop sequence
    # written whole by one token (Gemma's ``<start_of_image>``)
    enders: tuple[int, ...]

    @classmethod
    def of(cls, llm: Any, stops: Sequence[str] = TRANSCRIPT_STOPS) -> Vocabulary:
        marks = [s.encode("utf-8") for s in stops if not s.startswith("\n")]
        blank, enders = set(), []
        for token in range(llm.n_vocab()):
            text = llm.detokenize([token])
            if not text.strip():
                blank.add(token)
            if (
                not text
                or text.lstrip(b" \t")[:1] in (b"\n", b"\r")
                or any(mark in text for mark in marks)
            ):
                enders.append(token)
        return cls(blank=frozenset(blank), enders=tuple(enders))


EMPTY_VOCABULARY = Vocabulary(blank=frozenset(), enders=())


class Tally:
    """One generation's token counts, kept by a logits processor on the engine thread.

    It sees every sampling step: the first shows the whole prompt (exact in both chat formats).
    Until the answer has printed something, it forbids the tokens that would end it (an
    end-of-text token, a newline that starts every turn marker, an image marker). Spaces stay allowed: Gemma
    writes " 5" as a space and a digit.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.sampled = 0
        self.vocabulary = EMPTY_VOCABULARY
        self._spoke = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.sampled == 0:
            self.prompt_tokens = len(input_ids)
        elif not self._spoke:
            self._spoke = int(input_ids[-1]) not in self.vocabulary.blank
        if not self._spoke:
            scores[list(self.vocabulary.enders)] = float("-inf")
        self.sampled += 1
        return scores

    def usage(self) -> Usage:
        return Usage(input_tokens=self.prompt_tokens, output_tokens=self.sampled)
