"""Cost arithmetic and the dated catalogue, to the last digit."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from passerelle.pricing.catalogue import Catalogue, configured_price
from passerelle.pricing.cost import cost_usd, format_usd, usd_exact, usd_report, worst_case_usd
from passerelle.providers.anthropic_wire import usage_from_anthropic

D = Decimal


def test_cached_tokens_are_part_of_the_input_and_priced_at_their_rate() -> None:
    price = configured_price(D("0.15"), D("0.60"), D("0.075"))
    cost = cost_usd(price, input_tokens=1000, output_tokens=500, cached_tokens=200)
    assert cost == (800 * D("0.15") + 200 * D("0.075") + 500 * D("0.60")) / 10**6
    assert format_usd(cost) == "0.000435"


def test_cache_writes_are_priced_at_their_own_rate() -> None:
    sonnet = Catalogue.shipped().lookup("claude-sonnet-4-0", date(2026, 1, 1))
    assert sonnet is not None
    usage = usage_from_anthropic(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 50,
            "output_tokens": 20,
        }
    )
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens) == (1150, 1000, 50)
    cost = cost_usd(
        sonnet,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    assert cost == (100 * D(3) + 1000 * D("0.30") + 50 * D("3.75") + 20 * D(15)) / 10**6


def test_without_a_cache_write_price_writes_cost_the_input_price() -> None:
    price = configured_price(D(2), D(8), None)
    assert cost_usd(price, input_tokens=10, output_tokens=0, cache_write_tokens=10) == D(20) / 10**6


def test_the_worst_case_takes_the_dearest_input_rate_and_every_output_token() -> None:
    price = configured_price(D(3), D(15), D("0.3"), D("3.75"))
    assert (
        worst_case_usd(price, input_tokens=100, max_output_tokens=10)
        == (100 * D("3.75") + 10 * D(15)) / 10**6
    )


def test_the_catalogue_applies_the_price_in_force_on_the_day_of_the_call() -> None:
    catalogue = Catalogue.from_yaml(
        "prices:\n"
        "  - {model: m, since: '2025-01-01', input: 1.0, output: 2.0}\n"
        "  - {model: m, since: '2025-06-01', input: 0.5, output: 1.0}\n"
    )
    old, new = catalogue.lookup("m", date(2025, 5, 31)), catalogue.lookup("m", date(2025, 6, 1))
    assert old is not None and new is not None
    assert (old.input, new.input) == (D("1.0"), D("0.5"))
    assert (old.version, new.version) == ("catalogue:m@2025-01-01", "catalogue:m@2025-06-01")
    assert catalogue.lookup("m", date(2024, 12, 31)) is None
    assert catalogue.lookup("unknown", date(2025, 6, 1)) is None


def test_configured_prices_are_versioned_by_their_numbers() -> None:
    a = configured_price(D("0.15"), D("0.60"), None)
    assert a.version == configured_price(D("0.15"), D("0.60"), None).version
    assert a.version != configured_price(D("0.15"), D("0.61"), None).version
    assert a.version.startswith("config:")


def test_report_amounts_round_half_up() -> None:
    assert usd_report(D("0.0026925")) == "0.002693"
    assert format_usd(D("1E-7")) == "0.0000001"


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0", "0.000000000000"),
        ("0.00012345", "0.000123450000"),
        ("1E-12", "0.000000000001"),
        ("-0.3", "-0.300000000000"),
        ("9000000", "9000000.000000000000"),
    ],
)
def test_an_api_amount_is_a_plain_decimal_to_the_pico_dollar(amount: str, text: str) -> None:
    assert usd_exact(D(amount)) == text
