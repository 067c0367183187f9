"""French identifiers are found in their written forms, and only when their check digits hold."""

from __future__ import annotations

import pytest

from passerelle.sovereignty.french_ids import (
    IBAN,
    NIR,
    PHONE,
    SIREN,
    SIRET,
    french_spans,
    valid_iban,
    valid_nir,
    valid_siren,
    valid_siret,
)


def found(text: str) -> list[tuple[str, str]]:
    return [(s.entity, text[s.start : s.end]) for s in french_spans(text)]


def nir_key(body: str) -> str:
    """The key as the INSEE defines it, computed here independently of the recogniser."""
    number = int(body.replace("2A", "19").replace("2B", "18"))
    return f"{97 - number % 97:02d}"


@pytest.mark.parametrize(
    "written",
    ["1 84 12 76 451 089 46", "184127645108946", "1841276451089 46"],
)
def test_a_nir_is_found_spaced_or_not(written: str) -> None:
    assert found(f"Mon numéro de sécurité sociale est {written}.") == [(NIR, written)]


def test_a_corsican_nir_counts_2a_as_19() -> None:
    body = "269052A350078"
    written = f"{body}{nir_key(body)}"
    assert valid_nir(written)
    assert found(f"NIR : {written}") == [(NIR, written)]


def test_a_nir_with_a_wrong_key_is_not_one() -> None:
    assert not valid_nir("1 84 12 76 451 089 47")
    assert (NIR, "1 84 12 76 451 089 47") not in found("NIR 1 84 12 76 451 089 47")


def test_siren_and_siret_pass_luhn() -> None:
    assert valid_siren("732 829 320") and not valid_siren("732 829 321")
    assert valid_siret("732 829 320 00074") and not valid_siret("732 829 320 00075")
    assert found("La société 732 829 320 a un site, SIRET 732 829 320 00074.") == [
        (SIRET, "732 829 320 00074"),
        (SIREN, "732 829 320"),
    ]


def test_la_poste_sirets_sum_to_a_multiple_of_five() -> None:
    assert valid_siret("35600000000015")  # digits sum to 20: La Poste's rule, not Luhn
    assert not valid_siret("35600000000016")


def test_a_french_iban_is_proved_modulo_97() -> None:
    assert valid_iban("FR76 3000 6000 0112 3456 7890 189")
    assert not valid_iban("FR76 3000 6000 0112 3456 7890 188")
    assert found("IBAN FR76 3000 6000 0112 3456 7890 189 merci") == [
        (IBAN, "FR76 3000 6000 0112 3456 7890 189")
    ]
    assert found("IBAN FR7630006000011234567890189") == [(IBAN, "FR7630006000011234567890189")]


@pytest.mark.parametrize(
    "written",
    ["06 12 34 56 78", "06.12.34.56.78", "0612345678", "06-12-34-56-78", "+33 6 12 34 56 78",
     "+33612345678", "0033 6 12 34 56 78", "+33 (0)6 12 34 56 78", "01 44 55 66 77"],
)  # fmt: skip
def test_french_phone_spellings(written: str) -> None:
    assert found(f"Appelez-moi au {written} demain") == [(PHONE, written)]


@pytest.mark.parametrize(
    "text", ["le 12/03/2024 à 10:30", "commande 123456", "version 1.2.3.4", "00 12 34 56 78"]
)
def test_what_is_not_a_french_identifier(text: str) -> None:
    assert found(text) == []
