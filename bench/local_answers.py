"""Does the embedded model answer what it is asked? Checkable prompts, per chat framing.

``bench/local_answers.json`` holds short prompts with simple checks (a greeting must greet and
not mention Italy, "Count to five." must count to five in order, arithmetic, capitals, one-word
translations, yes/no, short lists, a system prompt, a name given a turn earlier), in a ``tuning``
set and two ``held_out`` sets. A framing is chosen on ``tuning`` only; the held-out sets say
whether the choice carries over to prompts it was not chosen on.

Every answer goes through ``LocalProvider`` itself, one engine for all framings (the first-token
rule, stop sequences and trimming are the production ones; only the framing is swapped), greedy
(t=0) and sampled (t=0.7, seeds 1..N). Per framing and set it prints:

- ``pass``: every check of the prompt holds, and the answer neither leaks nor runs on;
- ``leak``: the answer mentions a worked example of the framing (Italy, Rome) that the prompt
  did not;
- ``run-on``: the answer ran to ``max_tokens``, or carries on past its turn (a ``Question:`` or
  ``User:`` line, Gemma's control tokens such as ``<start_of_image>``, an ``[INST]``);
- ``empty``: nothing came back.

    python bench/local_answers.py              # every set; before, bare, chosen (~3 min)
    python bench/local_answers.py --sets tuning --framings template gemma-turns
    python bench/local_answers.py --sets tuning --framings chosen --verbose   # every answer

``template`` and ``gemma-turns`` (llama.cpp's chat path with its fallback format, or Gemma's
turn tokens) answer almost nothing right with the shipped base model and run to ``max_tokens``
each time, so they are slow and left out unless asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from passerelle.providers import local
from passerelle.providers.base import UpstreamRequest
from passerelle.providers.local import LocalProvider
from passerelle.providers.local_framing import (
    TRANSCRIPT_STOPS,
    TURN_STOPS,
    Framing,
    message_text,
)
from passerelle.providers.settings import LocalSettings

DATA = Path(__file__).with_name("local_answers.json")
ITALY = r"\b(italy|italian|rome)\b"  # the worked example the transcript framing used to show
# the worked examples shown now (``local_framing.EXAMPLES``), or any part of them
EXAMPLES = (r"\bevening\b", r"\b(neil|armstrong)\b|\bwalk(ed|s|ing)? on the moon\b")
RUN_ON = re.compile(
    r"<(start|end)_of_\w+>|\[/?INST\]|^\s*(question|answer|user|assistant|model)\s*:",
    re.IGNORECASE | re.MULTILINE,
)
Messages = list[dict[str, Any]]


# --- the framings measured ---------------------------------------------------------------------


def _turns(messages: Messages, user: str, bot: str) -> tuple[str, list[str]]:
    system = " ".join(
        message_text(m.get("content")).strip()
        for m in messages
        if m.get("role") in ("system", "developer")
    )
    turns = [
        f"{bot if m.get('role') == 'assistant' else user}: "
        + " ".join(message_text(m.get("content")).split())
        for m in messages
        if m.get("role") not in ("system", "developer")
    ]
    return system, [*turns, f"{bot}:"]


def one_example(messages: Messages) -> Framing:
    """The framing shipped before this benchmark: Question:/Answer: after one worked example."""
    system, turns = _turns(messages, "Question", "Answer")
    example = "Question: What is the capital of Italy?\nAnswer: The capital of Italy is Rome."
    blocks = [*[system] * bool(system), example, "\n".join(turns)]
    return Framing("\n\n".join(blocks), TURN_STOPS)  # and its stops: no image markers


def bare(messages: Messages) -> Framing:
    """Question:/Answer: and today's stops, no example."""
    system, turns = _turns(messages, "Question", "Answer")
    return Framing("\n\n".join([*[system] * bool(system), "\n".join(turns)]), TRANSCRIPT_STOPS)


@dataclass(frozen=True)
class Candidate:
    """A way to write a chat for the model: a transcript function, or llama.cpp's chat path."""

    chat_format: Literal["transcript", "template"]
    transcript: Callable[[Messages], Framing] | None = None
    template: str | None = None  # llama-cpp-python's named chat format, for ``template``
    merge_system: bool = False  # fold system messages into the first user turn (Gemma's way)
    leaks: tuple[str, ...] = (ITALY,)


def candidates() -> dict[str, Candidate]:
    return {
        "before": Candidate("transcript", one_example),
        "bare": Candidate("transcript", bare),
        "chosen": Candidate("transcript", local.transcript, leaks=(ITALY, *EXAMPLES)),
        # the GGUF has no chat template: llama.cpp falls back to Llama 2's [INST] format
        "template": Candidate("template"),
        "gemma-turns": Candidate("template", template="gemma", merge_system=True),
    }


def merged_system(messages: Messages) -> Messages:
    system = " ".join(
        message_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
    )
    rest = [dict(m) for m in messages if m.get("role") not in ("system", "developer")]
    if system and rest:
        rest[0]["content"] = f"{system}\n\n{message_text(rest[0].get('content'))}"
    return rest


# --- checks ------------------------------------------------------------------------------------


def _found(pattern: str, text: str) -> bool:
    return re.search(pattern, text, re.IGNORECASE) is not None


def in_order(patterns: Sequence[str], text: str) -> bool:
    at = 0
    for pattern in patterns:
        found = re.compile(rf"\b({pattern})\b", re.IGNORECASE).search(text, at)
        if found is None:
            return False
        at = found.end()
    return True


def checks_hold(prompt: dict[str, Any], text: str) -> bool:
    some = prompt.get("some_of")
    return (
        bool(text)
        and all(_found(p, text) for p in prompt.get("must", ()))
        and not any(_found(p, text) for p in prompt.get("must_not", ()))
        and in_order(prompt.get("in_order", ()), text)
        and (some is None or sum(_found(rf"\b{w}s?\b", text) for w in some["words"]) >= some["n"])
        and len(text.split()) <= prompt.get("max_words", 10_000)
    )


def leaked(candidate: Candidate, prompt: dict[str, Any], text: str) -> bool:
    asked = " ".join(message_text(m.get("content")) for m in prompt["messages"])
    return any(_found(p, text) and not _found(p, asked) for p in candidate.leaks)


@dataclass
class Tally:
    answers: int = 0
    passed: int = 0
    leaks: int = 0
    run_ons: int = 0
    empty: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, ok: bool, leak: bool, run_on: bool, empty: bool, note: str) -> None:
        self.answers += 1
        self.passed += ok
        self.leaks += leak
        self.run_ons += run_on
        self.empty += empty
        if not ok:
            self.failures.append(note)

    def cell(self) -> str:
        return (
            f"{self.passed:>3}/{self.answers:<3} {self.leaks:>3} {self.run_ons:>3} {self.empty:>3}"
        )


# --- running -----------------------------------------------------------------------------------


async def answer(provider: LocalProvider, messages: Messages, **body: Any) -> tuple[str, str]:
    completion = await provider.complete(
        UpstreamRequest(
            body={"messages": messages, **body}, upstream_model="gemma-3-270m", stream=False
        )
    )
    choice = orjson.loads(completion.body)["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


async def measure(
    provider: LocalProvider,
    candidate: Candidate,
    prompts: list[dict[str, Any]],
    *,
    temperature: float,
    seeds: list[int],
    max_tokens: int,
    verbose: bool,
) -> Tally:
    tally = Tally()
    for seed in seeds:
        for prompt in prompts:
            messages = prompt["messages"]
            if candidate.merge_system:
                messages = merged_system(messages)
            text, finish = await answer(
                provider, messages, temperature=temperature, seed=seed, max_tokens=max_tokens
            )
            leak = leaked(candidate, prompt, text)
            run_on = finish == "length" or RUN_ON.search(text) is not None
            ok = checks_hold(prompt, text) and not leak and not run_on
            note = f"{prompt['id']} t={temperature} seed={seed}: {text!r}"
            tally.add(ok, leak, run_on, not text, note)
            if verbose:
                print(f"    {'ok ' if ok else 'BAD'} {finish:6} {note}", flush=True)
    return tally


def provider_for(candidate: Candidate, engine: LocalProvider) -> LocalProvider:
    provider = LocalProvider(
        LocalSettings(name="bench", model="gemma-3-270m", chat_format=candidate.chat_format)
    )
    provider._llm, provider._vocabulary = engine._llm, engine._vocabulary  # one engine for all
    return provider


async def run(args: argparse.Namespace) -> None:
    data = json.loads(DATA.read_text())
    engine = LocalProvider(
        LocalSettings(name="bench", model="gemma-3-270m", n_threads=args.threads)
    )
    await engine.load()
    llm = engine._llm
    shipped, shipped_format = local.transcript, llm.chat_format
    every = candidates()
    header = "pass/n    leak run-on empty"
    print(f"{'set':11} {'framing':12} | greedy: {header} | t=0.7 x{args.seeds}: {header}")
    results: dict[str, Any] = {}
    try:
        for set_name in args.sets:
            for name in args.framings:
                candidate = every[name]
                if candidate.transcript is not None:
                    local.transcript = candidate.transcript  # swap the framing only
                llm.chat_format = candidate.template or shipped_format
                provider = provider_for(candidate, engine)
                start = time.perf_counter()
                cells = [
                    await measure(
                        provider,
                        candidate,
                        data[set_name],
                        temperature=temperature,
                        seeds=seeds,
                        max_tokens=args.max_tokens,
                        verbose=args.verbose,
                    )
                    for temperature, seeds in (
                        (0.0, [0]),
                        (0.7, list(range(1, args.seeds + 1))),
                    )
                ]
                local.transcript = shipped
                took = time.perf_counter() - start
                print(
                    f"{set_name:11} {name:12} | {cells[0].cell()}            "
                    f"| {cells[1].cell()}   ({took:.0f} s)",
                    flush=True,
                )
                results[f"{set_name}/{name}"] = [vars(c) for c in cells]
    finally:
        local.transcript = shipped
        llm.chat_format = shipped_format
        await engine.aclose()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sets = ["tuning", "held_out_a", "held_out_b"]
    parser.add_argument("--sets", nargs="+", default=sets, choices=sets)
    every = list(candidates())
    default = ["before", "bare", "chosen"]
    parser.add_argument("--framings", nargs="+", default=default, choices=every)
    parser.add_argument("--seeds", type=int, default=5, help="samples per prompt at t=0.7")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    parser.add_argument("--json", help="write every tally, failures included, to this file")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
