"""French identifiers found in text by their shape and proved by their check digits.

Presidio ships no recogniser for the numbers a French prompt is most likely to carry: the social
security number (NIR), the company numbers (SIREN, and SIRET for an establishment), the French
IBAN and French phone spellings (``06 12 34 56 78``, ``06.12.34.56.78``, ``+33 6 12 34 56 78``).
Each is a regular expression for its written forms and, where the number has one, a check of its
key: the NIR's key is 97 less the number modulo 97 (Corsica's ``2A``/``2B`` counted as 19/18),
SIREN and SIRET pass Luhn (La Poste's establishments, SIREN 356000000, sum to a multiple of 5
instead), an IBAN is 1 modulo 97. A shape whose key is wrong is not reported: a random 15-digit
number is not taken for a NIR. Pure functions with no dependency, so they run first and cheap,
before any language model (``sovereignty/pii.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

NIR = "FR_NIR"
SIREN = "FR_SIREN"
SIRET = "FR_SIRET"
IBAN = "IBAN_CODE"
PHONE = "PHONE_NUMBER"
LA_POSTE = "356000000"


@dataclass(frozen=True, slots=True)
class Span:
    """A piece of personal data in a text: ``text[start:end]`` is a value of type ``entity``."""

    start: int
    end: int
    entity: str
    score: float = 1.0


def digits(text: str) -> str:
    return "".join(c for c in text if c.isalnum()).upper()


def luhn(number: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(number)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def valid_nir(text: str) -> bool:
    """A NIR of 15 characters (13 and a 2-digit key), spaced or not."""
    n = digits(text)
    if len(n) != 15:
        return False
    body, key = n[:13], n[13:]
    body = body.replace("2A", "19", 1) if body[5:7] == "2A" else body
    body = body.replace("2B", "18", 1) if body[5:7] == "2B" else body
    if not (body.isdigit() and key.isdigit()):
        return False
    return 97 - int(body) % 97 == int(key)


def valid_siren(text: str) -> bool:
    n = digits(text)
    return len(n) == 9 and n.isdigit() and luhn(n)


def valid_siret(text: str) -> bool:
    n = digits(text)
    if len(n) != 14 or not n.isdigit():
        return False
    if n.startswith(LA_POSTE):
        return sum(int(c) for c in n) % 5 == 0
    return luhn(n)


def valid_iban(text: str) -> bool:
    n = digits(text)
    if len(n) < 15 or not n[:2].isalpha() or not n[2:4].isdigit():
        return False
    moved = n[4:] + n[:4]
    as_digits = "".join(str(int(c, 36)) for c in moved)
    return int(as_digits) % 97 == 1


def valid_phone(text: str) -> bool:
    n = "".join(c for c in text if c.isdigit())
    if n.startswith("0033"):
        n = n[4:]
    elif n.startswith("33") and text.lstrip().startswith("+"):
        n = n[2:]
    n = n[1:] if n.startswith("0") else n
    return len(n) == 9 and n[0] != "0"


_SEP = r"[ \u00a0]?"
_RECOGNISERS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = (
    (
        NIR,
        re.compile(
            rf"(?<![\w.])[1-478]{_SEP}\d\d{_SEP}(?:0[1-9]|1[0-2]|[2-9]\d){_SEP}(?:\d\d|2[ABab])"
            rf"{_SEP}\d{{3}}{_SEP}\d{{3}}{_SEP}\d\d(?!\w|[.,]\d)"
        ),
        valid_nir,
    ),
    (
        SIRET,
        re.compile(rf"(?<![\w.])\d{{3}}{_SEP}\d{{3}}{_SEP}\d{{3}}{_SEP}\d{{5}}(?![\w]|[.,]\d)"),
        valid_siret,
    ),
    (
        SIREN,
        re.compile(rf"(?<![\w.])\d{{3}}{_SEP}\d{{3}}{_SEP}\d{{3}}(?![\w]|[.,]\d| ?\d)"),
        valid_siren,
    ),
    (
        IBAN,
        re.compile(r"(?<!\w)FR\d\d(?: ?[0-9A-Z]{4}){5} ?[0-9A-Z]{3}(?!\w)", re.IGNORECASE),
        valid_iban,
    ),
    (
        PHONE,
        re.compile(
            r"(?<![\w+])(?:(?:\+|00)33[ .\-]?(?:\(0\)[ .\-]?)?[1-9]|0[1-9])"
            r"(?:[ .\-]?\d\d){4}(?![\w]|[.,]\d)"
        ),
        valid_phone,
    ),
)


def french_spans(text: str) -> Iterator[Span]:
    """Every French identifier in ``text`` whose check digits hold."""
    for entity, pattern, valid in _RECOGNISERS:
        for m in pattern.finditer(text):
            if valid(m.group()):
                yield Span(m.start(), m.end(), entity)
