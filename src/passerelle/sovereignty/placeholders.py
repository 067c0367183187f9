"""Placeholders for personal values, and the values put back into what the model answers.

Each value found in a call becomes ``<TYPE_N>`` (``<PERSON_1>``, ``<EMAIL_2>``): a tag models
read as a name to keep, short, and never valid text of any language. The same value is the same
placeholder everywhere in the call, and the numbers follow the order values first appear in the
conversation (system prompt, then each turn), so a conversation resent with one more turn keeps
the placeholders it had: they are stable within the conversation without the gateway keeping
any state between calls.

The answer is restored with what the model made of the placeholders: models sometimes change
their case (``<person_1>``), their brackets (``[PERSON_1]``, ``PERSON_1``) or their separator
(``<PERSON 1>``); any of these spellings of a placeholder this call issued is put back. A word
that merely looks like one (``person 1``, no bracket and no underscore) is left alone, as is a
placeholder the call never issued. A stream is restored as it passes: ``Restorer.feed`` gives
back the text that can be sent and holds a tail that could still be the start of a placeholder
(``<PERS`` in one event, ``ON_1>`` in the next) until the next event says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from passerelle.sovereignty.french_ids import Span

LABELS = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "IP_ADDRESS": "IP",
    "FR_NIR": "NIR",
    "FR_SIREN": "SIREN",
    "FR_SIRET": "SIRET",
}
OPENING = "<[{(«"
CLOSING = ">]})»"
HOLD_AT_MOST = 32  # the longest tail held back: the longest spelling of a placeholder


def normalised(entity: str, value: str) -> str:
    """Two spellings of one value share a placeholder: a phone number or an IBAN written with
    or without spaces, an e-mail address in any case."""
    if entity in ("PHONE_NUMBER", "IBAN_CODE", "CREDIT_CARD", "FR_NIR", "FR_SIREN", "FR_SIRET"):
        plain = "".join(c for c in value if c.isalnum()).upper()
        if entity == "PHONE_NUMBER" and value.lstrip().startswith(("+33", "0033")):
            plain = "0" + plain.removeprefix("00")[2:].removeprefix("0")  # +33 6... is 06...
        return plain
    if entity == "EMAIL_ADDRESS":
        return value.lower()
    return " ".join(value.split())


class Pseudonyms:
    """The values of one call and their placeholders, both ways."""

    def __init__(self) -> None:
        self._placeholders: dict[tuple[str, str], str] = {}  # (entity, normalised) -> tag
        self._values: dict[tuple[str, int], str] = {}  # (label, n) -> the value as first seen
        self._counts: dict[str, int] = {}  # label -> values so far
        self._entities: dict[str, int] = {}  # entity type -> distinct values
        self._pattern: re.Pattern[str] | None = None

    def __bool__(self) -> bool:
        return bool(self._values)

    def counts(self) -> dict[str, int]:
        """Entity type -> how many distinct values were replaced (never the values)."""
        return dict(self._entities)

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, normalised(entity, value))
        found = self._placeholders.get(key)
        if found is None:
            label = LABELS.get(entity, entity)
            n = self._counts.get(label, 0) + 1
            self._counts[label] = n
            self._entities[entity] = self._entities.get(entity, 0) + 1
            self._values[(label, n)] = value
            found = self._placeholders[key] = f"<{label}_{n}>"
            self._pattern = None
        return found

    def replace(self, text: str, spans: Iterable[Span]) -> str:
        """``text`` with each span replaced by its placeholder (spans do not overlap)."""
        out: list[str] = []
        at = 0
        for span in sorted(spans, key=lambda s: s.start):
            out.append(text[at : span.start])
            out.append(self.placeholder(span.entity, text[span.start : span.end]))
            at = span.end
        out.append(text[at:])
        return "".join(out)

    def _compiled(self) -> re.Pattern[str]:
        if self._pattern is None:
            labels = "|".join(
                sorted({re.escape(label) for label, _ in self._values}, key=len)[::-1]
            )
            self._pattern = re.compile(
                rf"(?P<open>[{re.escape(OPENING)}]\s*)?(?<![\w])(?P<label>{labels})"
                rf"(?P<sep>[_\- ]?)(?P<n>\d+)(?!\d)(?P<close>\s*[{re.escape(CLOSING)}])?",
                re.IGNORECASE,
            )
        return self._pattern

    def restore(self, text: str) -> str:
        """``text`` with every spelling of an issued placeholder replaced by its value."""
        if not self._values or not text:
            return text

        def put_back(m: re.Match[str]) -> str:
            value = self._values.get((m["label"].upper(), int(m["n"])))
            bracketed = m["open"] is not None or m["close"] is not None
            if value is None or not (bracketed or m["sep"] == "_"):
                return m.group()
            return value

        return self._compiled().sub(put_back, text)

    def could_grow(self, tail: str) -> bool:
        """Whether ``tail``, the end of the text so far, may be the start of a placeholder."""
        rest = tail[1:].lstrip() if tail[:1] in OPENING else tail
        if tail[:1] not in OPENING and (not rest or not rest[0].isalpha()):
            return False
        upper = rest.upper()
        for label in {label for label, _ in self._values}:
            if label.startswith(upper):
                return True
            if upper.startswith(label) and re.fullmatch(r"[_\- ]?\d*\s*", upper[len(label) :]):
                return True
        return False


class Restorer:
    """Restores one stream of text (a choice's content, a tool call's arguments) as it arrives."""

    __slots__ = ("_held", "_pseudonyms")

    def __init__(self, pseudonyms: Pseudonyms) -> None:
        self._pseudonyms = pseudonyms
        self._held = ""

    def feed(self, text: str) -> str:
        """What can be sent of ``text`` (with what was held before it), restored."""
        text = self._held + text
        cut = len(text)
        for at in range(max(0, len(text) - HOLD_AT_MOST), len(text)):
            if (at == 0 or not text[at - 1].isalnum()) and self._pseudonyms.could_grow(text[at:]):
                cut = at
                break
        self._held = text[cut:]
        return self._pseudonyms.restore(text[:cut])

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._pseudonyms.restore(held)
