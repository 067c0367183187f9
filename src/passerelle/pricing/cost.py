"""Pure cost functions: tokens and a price in, USD out, as exact decimals."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from passerelle.pricing.catalogue import Price

MILLION = Decimal(1_000_000)
MICRO = Decimal("0.000001")
PICO_USD = Decimal("0.000000000001")  # the ledger's unit: every amount it holds is a whole number


def cost_usd(
    price: Price,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal:
    """Cost of one call. Cached (read) and cache-written tokens are part of ``input_tokens``, as
    OpenAI reports them; each is priced at its own rate, the rest at the input price."""
    cached = min(max(cached_tokens, 0), input_tokens)
    written = min(max(cache_write_tokens, 0), input_tokens - cached)
    plain = input_tokens - cached - written
    return (
        plain * price.input
        + cached * price.cached_input
        + written * price.cache_write_input
        + output_tokens * price.output
    ) / MILLION


def worst_case_usd(price: Price, *, input_tokens: int, max_output_tokens: int) -> Decimal:
    """The most a call can cost: every input token at its dearest rate (uncached, or written to
    the cache), every allowed output token used."""
    dearest = max(price.input, price.cache_write_input)
    return (input_tokens * dearest + max_output_tokens * price.output) / MILLION


def usd_report(amount: Decimal, quantum: Decimal = MICRO) -> str:
    """An amount for a table a person reads: fixed decimals, rounded half up like every other
    money figure."""
    return str(amount.quantize(quantum, rounding=ROUND_HALF_UP))


def usd_exact(amount: Decimal) -> str:
    """An amount for an API: a decimal string to the pico-dollar the ledger stores
    (``0.000123450000``), so summing what the API says gives what the ledger holds."""
    return format(amount.quantize(PICO_USD, rounding=ROUND_HALF_UP), "f")


def format_usd(cost: Decimal) -> str:
    """A cost as a plain decimal string, no exponent, no trailing zeros (``0.000435``)."""
    text = format(cost, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
