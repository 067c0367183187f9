"""A second look at a semantic cache candidate: words that change the question, checked as words.

A sentence embedding puts "flights to Paris" and "flights from Paris" nearly on top of each other
(cosine 0.98 with the encoder the semantic cache uses), and "15% of 200" next to "20% of 200".
These are the false hits users of other gateways' caches report. Before the semantic cache serves
a stored answer for a new prompt, ``conflict`` compares the two prompts' surface (microseconds,
no model) and names the first difference that makes them different questions:

- **numbers**: the same numbers, as written (``3`` and ``3.0`` differ: a miss, never a wrong
  answer);
- **negation**: both negated or neither (``not``, ``never``, ``no``, ``n't``, ``without``...,
  and the French ``ne``/``pas``/``jamais``/``sans``...);
- **opposites**: for each pair of opposite words (to/from, before/after, more/less, buy/sell,
  best/worst, men/women...), one prompt leaning one way and the other the other way;
- **names**: a capitalised word (not opening a sentence) of either prompt that the other does not
  contain at all, in any case: "Python" against "python" agrees, "Java" against "Python" does not.

The checks and what each buys on the QQP pairs are in ``docs/caching.md`` (``bench/semantic_cache.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = frozenset(".?!:;\n")

NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nothing",
        "nobody",
        "nowhere",
        "nor",
        "neither",
        "without",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "wont",
        "wouldnt",
        "shouldnt",
        "couldnt",
        "hasnt",
        "havent",
        "hadnt",
        "ne",
        "pas",
        "jamais",
        "sans",
        "aucun",
        "aucune",
        "rien",
        "nein",
        "nicht",
        "kein",
        "keine",
        "nunca",
        "sin",
        "ningún",
    ]
)
OPPOSITES: tuple[tuple[str, str], ...] = (
    ("to", "from"),
    ("into", "out"),
    ("before", "after"),
    ("above", "below"),
    ("over", "under"),
    ("up", "down"),
    ("more", "less"),
    ("most", "least"),
    ("increase", "decrease"),
    ("higher", "lower"),
    ("better", "worse"),
    ("best", "worst"),
    ("first", "last"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("buy", "sell"),
    ("import", "export"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("start", "stop"),
    ("open", "close"),
    ("old", "new"),
    ("avant", "après"),
    ("plus", "moins"),
    ("vers", "depuis"),
    ("acheter", "vendre"),
)
_NOT_NAMES = frozenset({"i", "i'm", "i've", "i'd", "i'll"})


@dataclass(frozen=True, slots=True)
class Surface:
    """What the check compares of one prompt, computed once when it is stored."""

    words: frozenset[str]  # every word, lower case, apostrophes dropped
    numbers: frozenset[str]
    negated: bool
    leanings: tuple[int, ...]  # per pair in OPPOSITES: +1 the first word only, -1 the second only
    names: frozenset[str]  # capitalised words not opening a sentence, lower case


def surface(text: str) -> Surface:
    words: set[str] = set()
    names: set[str] = set()
    opening = True
    pos = 0
    for m in _WORD.finditer(text):
        if any(c in _SENTENCE_END for c in text[pos : m.start()]):
            opening = True
        pos = m.end()
        raw = m.group()
        word = raw.lower().replace("'", "").replace("’", "")
        words.add(word)
        if not opening and raw[0].isupper() and raw.lower() not in _NOT_NAMES:
            names.add(word)
        opening = False
    return Surface(
        words=frozenset(words),
        numbers=frozenset(_NUMBER.findall(text)),
        negated=not NEGATIONS.isdisjoint(words),
        leanings=tuple(_lean(words, a, b) for a, b in OPPOSITES),
        names=frozenset(names),
    )


def _lean(words: set[str], a: str, b: str) -> int:
    return (a in words) - (b in words)


def conflict(a: Surface, b: Surface) -> str | None:
    """Why two prompts close in meaning are still different questions, or None."""
    if a.numbers != b.numbers:
        return "numbers"
    if a.negated != b.negated:
        return "negation"
    if any(x * y < 0 for x, y in zip(a.leanings, b.leanings, strict=True)):
        return "opposites"
    if not a.names <= b.words or not b.names <= a.words:
        return "names"
    return None
