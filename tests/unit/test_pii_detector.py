"""The detector with its real models: what it finds, and where one finding spreads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from passerelle.sovereignty.pii import Detector, everywhere, language

pytestmark = pytest.mark.pii_models


@pytest.fixture(scope="module")
def detector() -> Iterator[Detector]:
    yield Detector()


def found(detector: Detector, text: str) -> list[tuple[str, str]]:
    return [(s.entity, text[s.start : s.end]) for s in detector.detect(text)]


def test_every_kind_is_found_in_one_text(detector: Detector) -> None:
    text = (
        "My name is John Smith: john.smith@example.com, 212-555-0199, card 4111 1111 1111 1111, "
        "SSN 308-63-0237, from 10.1.2.3 and 2001:db8::8a2e:370:7334, IBAN gb50mvfc38361978683032."
    )
    assert set(found(detector, text)) == {
        ("PERSON", "John Smith"),
        ("EMAIL_ADDRESS", "john.smith@example.com"),
        ("PHONE_NUMBER", "212-555-0199"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
        ("US_SSN", "308-63-0237"),
        ("IP_ADDRESS", "10.1.2.3"),
        ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
        ("IBAN_CODE", "gb50mvfc38361978683032"),
    }


def test_a_french_text_is_read_by_the_french_model(detector: Detector) -> None:
    text = "Bonjour, je suis Marie Lefèvre et mon collègue est Jean-Pierre Dubois, merci."
    assert language(text) == "fr"
    assert [v for kind, v in found(detector, text) if kind == "PERSON"] == [
        "Marie Lefèvre",
        "Jean-Pierre Dubois",
    ]


def test_a_card_number_is_not_taken_for_a_nir_nor_a_date_for_a_phone(detector: Detector) -> None:
    assert found(detector, "card 4556426428481144 ok") == [("CREDIT_CARD", "4556426428481144")]
    assert found(detector, "at 1994-06-17 08:11:32 exactly") == []


def test_a_name_found_once_is_replaced_everywhere(detector: Detector) -> None:
    texts = ["I am Margaret Thompson.", '{"subject": "Hello Margaret Thompson", "cc": "Thompson"}']
    spans = everywhere(texts, [detector.detect(t) for t in texts])
    second = [texts[1][s.start : s.end] for s in spans[1]]
    assert second == ["Margaret Thompson", "Thompson"]


def test_what_it_found_is_kept_per_text_without_the_values(detector: Detector) -> None:
    text = "Call Jean Dupont on 06 12 34 56 78."
    assert detector.detect(text) is detector.detect(text)
    kept = repr(detector._kept)
    assert "Dupont" not in kept and "06 12" not in kept
