"""What the ledger stores: ``UsageRecord`` (one row per call), its ``Status``, ``RevenueEntry``,
and how money is stored.

Costs are exact decimals in code and whole pico-dollars (1e-12 USD) in the database: every list
price with up to six decimals per million tokens is exact in that unit, integer sums stay exact,
and no database float ever touches money.

Text is made storable here, at the one boundary both stores share: PostgreSQL's TEXT refuses NUL
and neither store can encode a lone surrogate, so what a client typed (a ``user``, a feature name)
must never be the reason a served call has no row. NUL and lone surrogates become U+FFFD, the
same on SQLite and PostgreSQL; every other character is kept as typed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from passerelle.pricing.cost import usd_exact

PICO = Decimal("1e12")

GROUP_COLUMNS = {
    "tenant": "tenant",
    "feature": "feature",
    "model": "model",
    "provider": "provider",
    "upstream_model": "upstream_model",
    "key": "key_id",
    "user": "end_user",
    "status": "status",
    "day": "day",
    "month": "substr(day, 1, 7)",  # YYYY-MM: SQLite and PostgreSQL both have substr
    "cache": "cache",
    "saving_source": "saving_source",
}


def to_pico(usd: Decimal) -> int:
    return int((usd * PICO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_pico(pusd: int) -> Decimal:
    return Decimal(pusd) / PICO


class Status(StrEnum):
    """What became of a call, or of one attempt of it: the ledger's ``status`` column, stored as
    the text of each value (a ``Status`` is a ``str``, so rows and reports read it as text)."""

    OK = "ok"  # answered in full
    ERROR = "error"  # refused, or failed before or while answering (``error_code`` says why)
    CLIENT_DISCONNECTED = "client_disconnected"  # the client left before the answer ended
    UPSTREAM_CUT = "upstream_cut"  # the provider's stream broke off: usage is estimated
    REPLAYED = "replayed"  # an idempotent retry answered with the first answer, at cost 0
    ATTEMPT_FAILED = "attempt_failed"  # an upstream attempt that was retried or failed over
    INTERRUPTED = "interrupted"  # in flight when its process died; recorded at the next start


class SavingSource(StrEnum):
    """Why a call cost less than serving it from the model asked for: the ledger's
    ``saving_source`` column, next to ``saved_pusd`` (how much)."""

    CACHE_EXACT = "cache_exact"  # answered from the exact cache: the whole call was saved
    CACHE_SEMANTIC = "cache_semantic"  # answered with the answer to a prompt close in meaning


class CacheOutcome(StrEnum):
    """What the answer cache did for a call: the ledger's ``cache`` column (NULL: no cache is
    configured, or the endpoint is not cached)."""

    HIT = "hit"  # answered from a stored answer, at cost 0
    MISS = "miss"  # looked up, not found: answered upstream and stored if it could be
    REFRESH = "refresh"  # ``Cache-Control: no-cache``: answered upstream, the entry replaced
    BYPASS = "bypass"  # not looked up: sampled, opted out, or uncacheable


@dataclass(frozen=True, slots=True)
class RevenueEntry:
    """What a tenant paid for a month, as recorded by the admin API or a billing import."""

    tenant: str
    period: str  # YYYY-MM
    amount: Decimal
    currency: str = "USD"
    source: str = "config"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    attempt: int
    ts: float  # unix seconds, UTC
    tenant: str | None
    key_id: str | None
    feature: str | None
    end_user: str | None
    endpoint: str
    model: str | None
    provider: str | None
    upstream_model: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    usage_reported: bool
    cost_usd: Decimal | None  # None: unpriced
    price_version: str | None
    latency_ms: float
    ttft_ms: float | None
    status: Status
    error_code: str | None
    stream: bool
    decision: str | None = None  # policy decisions: soft budget, margin-floor degradation...
    # what the call did not cost, and why (``SavingSource``): a cache hit saved the whole call
    saved_usd: Decimal = Decimal(0)
    saving_source: str | None = None
    cache: str | None = None  # the cache lookup's outcome (``CacheOutcome``); None: no cache
    # a call that asked for a route: the model it chose, why, and what that saved against the
    # route's default model for the same usage (negative: it cost more; None: not priced)
    routed_to: str | None = None
    route_reason: str | None = None
    route_saved_usd: Decimal | None = None

    @property
    def cost_pusd(self) -> int | None:
        return None if self.cost_usd is None else to_pico(self.cost_usd)


ROUTE_COLUMNS = ("routed_to", "route_reason", "route_saved_pusd")  # store/migrations.py adds them
COLUMNS = (
    "request_id",
    "attempt",
    "ts",
    "day",
    "tenant",
    "key_id",
    "feature",
    "end_user",
    "endpoint",
    "model",
    "provider",
    "upstream_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "usage_reported",
    "cost_pusd",
    "price_version",
    "latency_ms",
    "ttft_ms",
    "status",
    "error_code",
    "stream",
    "decision",
    "saved_pusd",
    "saving_source",
    "cache",
    *ROUTE_COLUMNS,
)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str | None) -> str | None:
    """``text`` as both stores can keep it: NUL and lone surrogates replaced by U+FFFD."""
    if text is None or (text.isascii() and "\x00" not in text):
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def row_of(r: UsageRecord) -> tuple[object, ...]:
    day = time.strftime("%Y-%m-%d", time.gmtime(r.ts))
    return (
        storable(r.request_id),
        r.attempt,
        r.ts,
        day,
        storable(r.tenant),
        storable(r.key_id),
        storable(r.feature),
        storable(r.end_user),
        storable(r.endpoint),
        storable(r.model),
        storable(r.provider),
        storable(r.upstream_model),
        r.input_tokens,
        r.output_tokens,
        r.cached_tokens,
        int(r.usage_reported),
        r.cost_pusd,
        storable(r.price_version),
        r.latency_ms,
        r.ttft_ms,
        storable(r.status),
        storable(r.error_code),
        int(r.stream),
        storable(r.decision),
        to_pico(r.saved_usd),
        storable(r.saving_source),
        storable(r.cache),
        storable(r.routed_to),
        storable(r.route_reason),
        None if r.route_saved_usd is None else to_pico(r.route_saved_usd),
    )


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group of a usage report."""

    group: dict[str, str | None]
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    unpriced_requests: int
    errors: int

    def as_json(self) -> dict[str, object]:
        return {
            **self.group,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": usd_exact(self.cost_usd),
            "unpriced_requests": self.unpriced_requests,
            "errors": self.errors,
        }
