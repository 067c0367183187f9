"""Budgets and rate limits in one process: admission, settlement, windows and periods, exactly.

Every moment is given explicitly (``Admission.at``, an injected clock for ``start``): nothing
here sleeps or reads the wall clock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from passerelle.errors import InvalidRequestError
from passerelle.limits.counters import (
    Admission,
    Floor,
    LocalCounters,
    Refusal,
    Reservation,
    dedupe,
)
from passerelle.limits.periods import (
    FAR,
    period_end,
    period_id,
    period_start,
    seconds_left,
)
from passerelle.limits.rules import BudgetRule, RateRule, from_nano, to_nano
from passerelle.pipeline.budget import OutputCeiling, choices, output_limit
from passerelle.pipeline.context import Call
from passerelle.providers.anthropic_wire import to_anthropic_body
from passerelle.providers.base import UpstreamRequest
from passerelle.providers.local import engine_body
from passerelle.providers.openai_compat import to_upstream_body

# 2024-05-10 12:00:00 UTC
NOON = datetime(2024, 5, 10, 12, tzinfo=UTC).timestamp()
NANO = 10**9


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def budget(
    usd: str, period: str = "day", *, hard: bool = True, scope: str = "tenant:acme"
) -> BudgetRule:
    return BudgetRule(
        scope=scope, label=scope.replace(":", " "), usd=Decimal(usd), period=period, hard=hard
    )


def admission(
    rid: str,
    at: float,
    usd: str = "0",
    *,
    budgets: list[BudgetRule] | None = None,
    rates: list[RateRule] | None = None,
    tokens: int = 0,
) -> Admission:
    return Admission(
        reservation_id=rid,
        at=at,
        amount_nano=to_nano(Decimal(usd)),
        budgets=list(budgets or []),
        rates=list(rates or []),
        tokens=tokens,
    )


async def zero(rule: BudgetRule, at: float) -> int:
    return 0


async def started(seed=zero) -> LocalCounters:  # type: ignore[no-untyped-def]
    counters = LocalCounters(clock=lambda: NOON)
    await counters.start([], seed)
    return counters


# --- admission and settlement ------------------------------------------------------------------


async def test_admission_reserves_the_worst_case_until_settled() -> None:
    rule = budget("1.00")
    counters = await started()
    first = await counters.admit(admission("r1", NOON, "0.60", budgets=[rule]))
    assert isinstance(first, Reservation)
    # 0.60 held: another 0.60 would pass the dollar
    refused = await counters.admit(admission("r2", NOON, "0.60", budgets=[rule]))
    assert isinstance(refused, Refusal)
    assert refused.rule == rule and refused.used == 600_000_000
    assert await counters.spent_nano(rule, NOON) == 0  # held is not spent


async def test_settlement_replaces_the_reservation_with_the_real_cost() -> None:
    rule = budget("1.00")
    counters = await started()
    held = await counters.admit(admission("r1", NOON, "0.60", budgets=[rule]))
    assert isinstance(held, Reservation)
    await counters.settle(held, to_nano(Decimal("0.10")), tokens=0)
    assert await counters.spent_nano(rule, NOON) == 100_000_000
    # 0.10 spent, nothing held: 0.90 fits exactly, a nano-dollar more does not
    exact = await counters.admit(admission("r2", NOON, "0.90", budgets=[rule]))
    assert isinstance(exact, Reservation)
    over = await counters.admit(admission("r3", NOON, "0.000000001", budgets=[rule]))
    assert isinstance(over, Refusal) and over.used == NANO


async def test_settling_twice_counts_once() -> None:
    rule = budget("1.00")
    counters = await started()
    held = await counters.admit(admission("r1", NOON, "0.50", budgets=[rule]))
    assert isinstance(held, Reservation)
    await counters.settle(held, to_nano(Decimal("0.20")), tokens=0)
    await counters.settle(held, to_nano(Decimal("0.20")), tokens=0)
    assert held.settled
    assert await counters.spent_nano(rule, NOON) == 200_000_000
    again = await counters.admit(admission("r2", NOON, "0.80", budgets=[rule]))
    assert isinstance(again, Reservation)  # the 0.50 hold went back exactly once


async def test_a_refused_admission_reserves_nothing() -> None:
    rule = budget("1.00")
    counters = await started()
    assert isinstance(await counters.admit(admission("r1", NOON, "2", budgets=[rule])), Refusal)
    assert isinstance(await counters.admit(admission("r2", NOON, "1", budgets=[rule])), Reservation)


async def test_hard_refusal_retries_after_the_period_resets() -> None:
    counters = await started()
    rule = budget("0.01", "day")
    refusal = await counters.admit(admission("r1", NOON, "1", budgets=[rule]))
    assert isinstance(refusal, Refusal)
    assert refusal.retry_after_s == 12 * 3600  # noon to midnight UTC


async def test_soft_budget_admits_and_reports_what_it_passed() -> None:
    soft = budget("0.01", hard=False)
    counters = await started()
    out = await counters.admit(admission("r1", NOON, "1", budgets=[soft]))
    assert isinstance(out, Reservation)
    assert out.soft_exceeded == [soft]


async def test_one_hard_refusal_refuses_the_call_under_every_budget() -> None:
    tenant = budget("10")
    feature = budget("0.01", scope="feature:acme:chat")
    counters = await started()
    out = await counters.admit(admission("r1", NOON, "1", budgets=[tenant, feature]))
    assert isinstance(out, Refusal) and out.rule == feature
    # the tenant budget was not charged by the refused call
    ok = await counters.admit(admission("r2", NOON, "10", budgets=[tenant]))
    assert isinstance(ok, Reservation)


async def test_counters_start_from_what_the_ledger_says_was_spent() -> None:
    rule = budget("1.00", "month")
    seen: list[tuple[BudgetRule, float]] = []

    async def seed(r: BudgetRule, at: float) -> int:
        seen.append((r, at))
        return to_nano(Decimal("0.75"))

    counters = LocalCounters(clock=lambda: NOON)
    await counters.start([rule], seed)
    assert seen == [(rule, NOON)]
    assert await counters.spent_nano(rule, NOON) == 750_000_000
    refused = await counters.admit(admission("r1", NOON, "0.30", budgets=[rule]))
    assert isinstance(refused, Refusal) and refused.used == 750_000_000


async def test_a_new_period_is_seeded_afresh() -> None:
    rule = budget("1.00", "day")
    calls: list[float] = []

    async def seed(r: BudgetRule, at: float) -> int:
        calls.append(at)
        return 0

    counters = LocalCounters(clock=lambda: NOON)
    await counters.start([rule], seed)
    held = await counters.admit(admission("r1", NOON, "0.9", budgets=[rule]))
    assert isinstance(held, Reservation)
    await counters.settle(held, to_nano(Decimal("0.9")), tokens=0)
    tomorrow = NOON + 86400
    fresh = await counters.admit(admission("r2", tomorrow, "0.9", budgets=[rule]))
    assert isinstance(fresh, Reservation)
    assert calls == [NOON, tomorrow]
    assert await counters.spent_nano(rule, NOON) == 900_000_000


# --- rate limits: a sliding minute ----------------------------------------------------------------


async def test_requests_per_minute_slide_with_the_window() -> None:
    rpm = RateRule(scope="tenant:acme", label="tenant acme", kind="rpm", limit=2)
    counters = await started()
    assert isinstance(await counters.admit(admission("a", NOON, rates=[rpm])), Reservation)
    assert isinstance(await counters.admit(admission("b", NOON + 30, rates=[rpm])), Reservation)
    refused = await counters.admit(admission("c", NOON + 31, rates=[rpm]))
    assert isinstance(refused, Refusal)
    assert refused.used == 2
    assert refused.retry_after_s == 30  # the first request leaves the window at NOON + 60
    still = await counters.admit(admission("d", NOON + 59.999, rates=[rpm]))
    assert isinstance(still, Refusal)
    # one minute after the first request, it is out of the window: one place frees up
    assert isinstance(await counters.admit(admission("e", NOON + 60, rates=[rpm])), Reservation)
    assert isinstance(await counters.admit(admission("f", NOON + 60, rates=[rpm])), Refusal)


async def test_a_rate_refusal_is_not_counted_in_the_window() -> None:
    rpm = RateRule(scope="tenant:acme", label="tenant acme", kind="rpm", limit=1)
    counters = await started()
    assert isinstance(await counters.admit(admission("a", NOON, rates=[rpm])), Reservation)
    for i in range(5):
        assert isinstance(await counters.admit(admission(f"x{i}", NOON + 1, rates=[rpm])), Refusal)
    assert isinstance(await counters.admit(admission("b", NOON + 60, rates=[rpm])), Reservation)


async def test_tokens_per_minute_are_corrected_at_settlement() -> None:
    tpm = RateRule(scope="tenant:acme", label="tenant acme", kind="tpm", limit=1000)
    counters = await started()
    big = await counters.admit(admission("a", NOON, rates=[tpm], tokens=900))
    assert isinstance(big, Reservation)
    assert isinstance(await counters.admit(admission("b", NOON, rates=[tpm], tokens=200)), Refusal)
    await counters.settle(big, 0, tokens=100)  # it really used 100 tokens
    assert isinstance(
        await counters.admit(admission("c", NOON, rates=[tpm], tokens=900)), Reservation
    )
    assert isinstance(await counters.admit(admission("d", NOON, rates=[tpm], tokens=1)), Refusal)


async def test_a_budget_refusal_counts_no_request_against_the_rate() -> None:
    rule = budget("0.01")
    rpm = RateRule(scope="tenant:acme", label="tenant acme", kind="rpm", limit=1)
    counters = await started()
    refused = await counters.admit(admission("a", NOON, "1", budgets=[rule], rates=[rpm]))
    assert isinstance(refused, Refusal) and refused.rule == rule
    assert isinstance(await counters.admit(admission("b", NOON, rates=[rpm])), Reservation)


# --- dedupe ------------------------------------------------------------------------------------


def test_dedupe_keeps_the_stricter_of_two_rules_on_one_counter() -> None:
    loose, tight = budget("10"), budget("1")
    assert dedupe([loose, tight], NOON) == [tight]
    assert dedupe([tight, loose], NOON) == [tight]


def test_dedupe_prefers_hard_over_soft_whatever_the_amounts() -> None:
    soft, hard = budget("1", hard=False), budget("100", hard=True)
    assert dedupe([soft, hard], NOON) == [hard]
    assert dedupe([hard, soft], NOON) == [hard]


def test_dedupe_keeps_rules_on_different_counters() -> None:
    day, month = budget("1", "day"), budget("1", "month")
    other = budget("1", "day", scope="tenant:globex")
    assert dedupe([day, month, other], NOON) == [day, month, other]


# --- periods -----------------------------------------------------------------------------------


def test_period_ids_are_utc_day_month_or_total() -> None:
    late = ts(2024, 5, 31, 23, 59, 59)
    assert period_id("day", late) == "2024-05-31"
    assert period_id("month", late) == "2024-05"
    assert period_id("total", late) == "total"
    assert period_id("day", late + 1) == "2024-06-01"
    assert period_id("month", late + 1) == "2024-06"


@pytest.mark.parametrize(
    ("at", "period", "start", "end"),
    [
        (
            ts(2024, 5, 10, 12),
            "day",
            datetime(2024, 5, 10, tzinfo=UTC),
            datetime(2024, 5, 11, tzinfo=UTC),
        ),
        (
            ts(2024, 12, 31, 23, 59),
            "day",
            datetime(2024, 12, 31, tzinfo=UTC),
            datetime(2025, 1, 1, tzinfo=UTC),
        ),
        (
            ts(2024, 12, 15),
            "month",
            datetime(2024, 12, 1, tzinfo=UTC),
            datetime(2025, 1, 1, tzinfo=UTC),
        ),
        (
            ts(2024, 1, 31, 23),
            "month",
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2024, 2, 1, tzinfo=UTC),
        ),
        (
            ts(2024, 2, 29, 12),
            "month",
            datetime(2024, 2, 1, tzinfo=UTC),
            datetime(2024, 3, 1, tzinfo=UTC),
        ),
        (
            ts(2023, 2, 1),
            "month",
            datetime(2023, 2, 1, tzinfo=UTC),
            datetime(2023, 3, 1, tzinfo=UTC),
        ),
    ],
)
def test_periods_start_and_end_on_utc_boundaries(
    at: float, period: str, start: datetime, end: datetime
) -> None:
    assert period_start(period, at) == start
    assert period_end(period, at) == end


def test_december_resets_on_the_first_of_january() -> None:
    new_year_eve = ts(2024, 12, 31, 23, 59, 59)
    assert seconds_left("month", new_year_eve) == 1
    assert seconds_left("day", new_year_eve) == 1
    assert period_id("month", new_year_eve + 1) == "2025-01"


def test_a_total_budget_never_resets() -> None:
    assert period_start("total", NOON) is None
    assert period_end("total", NOON) is None
    assert seconds_left("total", NOON) == FAR


def test_seconds_left_is_never_zero() -> None:
    assert seconds_left("day", ts(2024, 5, 11) - 0.25) == 1


def test_budget_counters_are_named_by_scope_period_and_its_id() -> None:
    assert budget("1", "month").counter(NOON) == "tenant:acme:month:2024-05"
    assert budget("1", "day").counter(NOON) == "tenant:acme:day:2024-05-10"
    assert budget("1", "total").counter(NOON) == "tenant:acme:total:total"
    assert budget("1", "day").ttl(NOON) == 12 * 3600 + 86400


# --- nano-dollars --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "nearest", "up"),
    [
        ("0", 0, 0),
        ("1", 1_000_000_000, 1_000_000_000),
        ("0.000000001", 1, 1),
        ("0.0000000014", 1, 2),
        ("0.0000000015", 2, 2),
        ("0.0000000005", 1, 1),
        ("0.0000000004", 0, 1),
        ("0.0000625", 62_500, 62_500),
        ("9000000", 9 * 10**15, 9 * 10**15),
    ],
)
def test_nano_dollars_round_half_up_or_up(usd: str, nearest: int, up: int) -> None:
    assert to_nano(Decimal(usd)) == nearest
    assert to_nano(Decimal(usd), up=True) == up


def test_nano_dollars_round_trip_exactly() -> None:
    assert from_nano(1) == Decimal("0.000000001")
    assert from_nano(to_nano(Decimal("123.456789012"))) == Decimal("123.456789012")
    assert budget("0.01").limit_nano == 10_000_000


# --- Redis: a counter that vanished is seeded again, never restarted from zero ---------------------


async def test_a_redis_counter_that_vanished_is_reseeded_from_the_ledger(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from passerelle.limits.redis_counters import RedisCounters

    rule = budget("1.00", "month", scope=f"tenant:unit-{uuid.uuid4().hex}")
    seeds: list[float] = []
    ledger = {"spent": Decimal("0.75")}  # what the ledger says was spent before

    async def seed(r: BudgetRule, at: float) -> int:
        seeds.append(at)
        return to_nano(ledger["spent"])

    counters = RedisCounters(redis_url)
    raw = aioredis.from_url(redis_url)
    try:
        await counters.start([rule], seed)
        held = await counters.admit(admission("r1", NOON, "0.10", budgets=[rule]))
        assert isinstance(held, Reservation)
        await counters.settle(held, to_nano(Decimal("0.10")), tokens=0)
        assert await counters.spent_nano(rule, NOON) == 850_000_000
        # Redis restarted empty (or evicted the key): the ledger now holds 0.85
        await raw.delete("passerelle:budget:" + rule.counter(NOON))
        seeds.clear()
        ledger["spent"] = Decimal("0.85")
        refused = await counters.admit(admission("r2", NOON, "0.20", budgets=[rule]))
        assert isinstance(refused, Refusal) and refused.used == 850_000_000
        assert seeds == [NOON]
        assert await counters.spent_nano(rule, NOON) == 850_000_000
    finally:
        await raw.delete(
            "passerelle:budget:" + rule.counter(NOON),
            "passerelle:budget:" + rule.counter(NOON) + ":holds",
        )
        await raw.aclose()
        await counters.close()


# --- the margin floor, checked in the admission that reserves ------------------------------------


@pytest.fixture(params=["in-process", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which implementation of ``Counters`` runs the contract they share (Redis' URL, or none)."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return ""


@asynccontextmanager
async def counters_of(redis_url: str) -> AsyncIterator[Any]:
    if not redis_url:
        yield await started()
        return
    from passerelle.limits.redis_counters import RedisCounters

    counters = RedisCounters(redis_url)
    await counters.start([], zero)
    try:
        yield counters
    finally:
        await counters.close()


def tracking(tag: str) -> BudgetRule:
    """A tenant's month counter (soft, far above any amount here), on a scope of its own."""
    return budget("1000", "month", hard=False, scope=f"tenant:floor-{tag}-{uuid.uuid4().hex}")


async def test_the_margin_floor_counts_calls_in_flight(kind: str) -> None:
    async with counters_of(kind) as any_counters:
        rule = tracking("flight")
        floor = Floor(rule=rule, limit_nano=to_nano(Decimal("0.20")))
        first = await any_counters.admit(
            with_floor(admission("r1", NOON, "0.30", budgets=[rule]), floor)
        )
        assert isinstance(first, Reservation)
        # nothing is spent yet, but 0.30 is in flight: the next call is past the floor
        second = await any_counters.admit(
            with_floor(admission("r2", NOON, "0.01", budgets=[rule]), floor)
        )
        assert isinstance(second, Refusal) and second.rule == floor
        assert second.used == to_nano(Decimal("0.30"))
        # the refusal reserved nothing; once settled at its real cost (0.10), the floor is clear again
        await any_counters.settle(first, to_nano(Decimal("0.10")), tokens=0)
        third = await any_counters.admit(
            with_floor(admission("r3", NOON, "0.05", budgets=[rule]), floor)
        )
        assert isinstance(third, Reservation)


async def test_a_call_that_reaches_the_floor_exactly_is_not_past_it(kind: str) -> None:
    async with counters_of(kind) as any_counters:
        rule = tracking("exact")
        floor = Floor(rule=rule, limit_nano=to_nano(Decimal("0.20")))
        assert isinstance(
            await any_counters.admit(admission("r1", NOON, "0.20", budgets=[rule])), Reservation
        )
        at_floor = await any_counters.admit(
            with_floor(admission("r2", NOON, "0.01", budgets=[rule]), floor)
        )
        assert isinstance(at_floor, Reservation)
        past = await any_counters.admit(
            with_floor(admission("r3", NOON, "0.01", budgets=[rule]), floor)
        )
        assert isinstance(past, Refusal) and past.rule == floor


async def test_the_floor_is_reported_before_a_hard_budget_the_cheaper_model_may_fit(
    kind: str,
) -> None:
    async with counters_of(kind) as any_counters:
        # past the floor the call is degraded, and re-admitted at the cheaper worst case: a hard
        # budget the dear worst case would break must not refuse it first
        rule = tracking("order")
        hard = budget("0.50", scope=f"feature:floor-{uuid.uuid4().hex}:chat")
        floor = Floor(rule=rule, limit_nano=0)
        assert isinstance(
            await any_counters.admit(admission("r1", NOON, "0.01", budgets=[rule])), Reservation
        )
        out = await any_counters.admit(
            with_floor(admission("r2", NOON, "1", budgets=[hard, rule]), floor)
        )
        assert isinstance(out, Refusal) and out.rule == floor
        cheap = await any_counters.admit(admission("r3", NOON, "0.40", budgets=[hard, rule]))
        assert isinstance(cheap, Reservation)


def with_floor(a: Admission, floor: Floor) -> Admission:
    a.floor = floor
    return a


# --- the output a call may produce: reserved, counted, and sent upstream -----------------------------


def chat_call(
    body: dict[str, Any], max_tokens: int | None = None, endpoint: str = "chat.completions"
) -> Call:
    call = Call(endpoint=endpoint, headers={}, raw_body=b"")
    call.body, call.max_tokens = body, max_tokens
    return call


def test_a_call_without_max_tokens_is_held_to_the_ceiling() -> None:
    call = chat_call({"messages": []})
    assert output_limit(call, OutputCeiling(300)) == 300
    assert call.max_tokens == 300 and "decision" not in call.annotations


def test_a_max_tokens_under_the_ceiling_is_kept() -> None:
    call = chat_call({"max_tokens": 50}, 50)
    assert output_limit(call, OutputCeiling(300, refuse=True)) == 50 and call.max_tokens == 50


def test_a_max_tokens_above_the_ceiling_is_capped_and_annotated() -> None:
    call = chat_call({"max_tokens": 9000}, 9000)
    assert output_limit(call, OutputCeiling(300)) == 300
    assert call.max_tokens == 300
    assert call.annotations["decision"] == "max_tokens capped: 9000 -> 300"
    assert call.response_headers["x-passerelle-max-tokens-capped"] == "300"


def test_a_max_completion_tokens_above_the_ceiling_is_refused_by_name() -> None:
    call = chat_call({"max_completion_tokens": 301}, 301)
    with pytest.raises(InvalidRequestError) as exc:
        output_limit(call, OutputCeiling(300, refuse=True))
    assert exc.value.param == "max_completion_tokens"
    assert exc.value.code == "integer_above_max_value"


def test_embeddings_produce_no_output() -> None:
    call = chat_call({"input": "x"}, endpoint="embeddings")
    assert output_limit(call, OutputCeiling(300)) == 0 and call.max_tokens is None


def test_n_choices_each_get_the_limit() -> None:
    assert choices(chat_call({"n": 4})) == 4
    assert choices(chat_call({})) == 1


def upstream(body: dict[str, Any], limit: int | None) -> UpstreamRequest:
    return UpstreamRequest(body=body, upstream_model="m", stream=False, max_output_tokens=limit)


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({}, {"max_tokens": 300}),
        ({"max_tokens": 9000}, {"max_tokens": 300}),
        ({"max_completion_tokens": 9000}, {"max_completion_tokens": 300}),
        (
            {"max_tokens": 100, "max_completion_tokens": 9000},
            {"max_tokens": 100, "max_completion_tokens": 300},
        ),
    ],
)
def test_openai_upstreams_get_the_limit_in_the_field_the_client_used(
    body: dict[str, Any], sent: dict[str, int]
) -> None:
    out = orjson.loads(to_upstream_body(upstream(body, 300)))
    assert {k: v for k, v in out.items() if k in ("max_tokens", "max_completion_tokens")} == sent


def test_anthropic_and_local_upstreams_get_the_limit_as_max_tokens() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9000}
    assert to_anthropic_body(upstream(body, 300))["max_tokens"] == 300
    assert to_anthropic_body(upstream(body, None))["max_tokens"] == 9000
    engine = engine_body(upstream(body, 300))
    assert engine["max_tokens"] == 300 and "max_completion_tokens" not in engine
    assert engine_body(upstream(body, None)) is body


class FakeLedger:
    """What a ledger answers a budget correction: a scope's total and each call's recorded cost.

    Tests move it as the pipeline would: a call is recorded (``record``) before it settles."""

    def __init__(self, spent: str = "0") -> None:
        self.total = to_nano(Decimal(spent))
        self.calls: dict[str, int] = {}

    def record(self, rid: str, usd: str) -> int:
        self.calls[rid] = to_nano(Decimal(usd))
        self.total += self.calls[rid]
        return self.calls[rid]

    async def seed(self, rule: BudgetRule, at: float) -> int:
        return self.total

    async def cost(self, rid: str) -> int | None:
        return self.calls.get(rid)


@asynccontextmanager
async def redis_books(redis_url: str):  # type: ignore[no-untyped-def]
    """(counters, ledger, rule, raw client, key) on a fresh scope; its keys deleted afterwards."""
    import uuid

    import redis.asyncio as aioredis

    from passerelle.limits.redis_counters import RedisCounters

    rule = budget("1.00", "month", scope=f"tenant:unit-{uuid.uuid4().hex}")
    ledger = FakeLedger()
    counters = RedisCounters(redis_url, recorded_cost=ledger.cost)
    raw = aioredis.from_url(redis_url)
    await counters.start([rule], ledger.seed)
    key = "passerelle:budget:" + rule.counter(NOON)
    try:
        yield counters, ledger, rule, raw, key
    finally:
        await raw.delete(key, key + ":holds")
        await raw.aclose()
        await counters.close()


async def test_a_settlement_applied_twice_counts_once(redis_url: str) -> None:
    async with redis_books(redis_url) as (counters, ledger, rule, raw, key):
        held = await counters.admit(admission("r1", NOON, "0.10", budgets=[rule]))
        assert isinstance(held, Reservation)
        cost = ledger.record("r1", "0.04")
        await counters.settle(held, cost, tokens=0)
        # the same settlement again, as a retry whose first reply was lost would send it
        await counters.settle(Reservation(held.admission), cost, tokens=0)
        assert await counters.spent_nano(rule, NOON) == cost
        assert int(await raw.hget(key, "reserved")) == 0


async def test_a_counter_reseeded_with_calls_still_to_settle_counts_each_once(
    redis_url: str,
) -> None:
    async with redis_books(redis_url) as (counters, ledger, rule, raw, key):
        ledger.record("before", "0.30")
        a = await counters.admit(admission("a", NOON, "0.10", budgets=[rule]))
        b = await counters.admit(admission("b", NOON, "0.10", budgets=[rule]))
        assert isinstance(a, Reservation) and isinstance(b, Reservation)
        cost_a = ledger.record("a", "0.05")  # recorded, not settled yet when the counter is lost
        await raw.hdel(key, "spent")
        refused = await counters.admit(admission("c", NOON, "0.70", budgets=[rule]))
        # reseeded: 0.30 + a's 0.05 in the ledger, less a's (its settlement will count it); both holds
        assert isinstance(refused, Refusal) and refused.used == to_nano(Decimal("0.50"))
        await counters.settle(a, cost_a, tokens=0)
        await counters.settle(b, ledger.record("b", "0.06"), tokens=0)
        assert await counters.spent_nano(rule, NOON) == ledger.total == to_nano(Decimal("0.41"))
        assert int(await raw.hget(key, "reserved")) == 0


async def test_an_expired_unsettled_hold_is_counted_from_the_ledger(redis_url: str) -> None:
    from passerelle.limits.redis_counters import RESERVATION_TTL_S

    async with redis_books(redis_url) as (counters, ledger, rule, raw, key):
        lost = await counters.admit(admission("lost", NOON, "0.10", budgets=[rule]))
        assert isinstance(lost, Reservation)
        ledger.record("lost", "0.09")  # served and recorded; its replica died before settling
        later = NOON + RESERVATION_TTL_S + 1
        ok = await counters.admit(admission("next", later, "0.10", budgets=[rule]))
        assert isinstance(ok, Reservation)
        assert int(await raw.hget(key, "spent")) == to_nano(Decimal("0.09"))
        assert int(await raw.hget(key, "reserved")) == to_nano(Decimal("0.10"))
        await counters.settle(ok, ledger.record("next", "0.02"), tokens=0)
        assert await counters.spent_nano(rule, NOON) == ledger.total
        # a settlement arriving after its hold expired is not counted again
        await counters.settle(lost, to_nano(Decimal("0.09")), tokens=0)
        again = await counters.admit(admission("again", later, "0", budgets=[rule]))
        assert isinstance(again, Reservation)
        assert await counters.spent_nano(rule, NOON) == ledger.total
