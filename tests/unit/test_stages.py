"""Each stage of the request path alone, with a fake ``next`` and a ``Call`` built in one line.

No process, no socket: what a stage does to a call, what it lets through, and what it leaves for
the end of the call (settlement, stored answers, the journal), see ``tests/unit/stages.py``.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

import orjson
import pytest

from passerelle.config.schema import Config, MarginFloorConfig, PlanConfig
from passerelle.economics.revenue import RevenueBook
from passerelle.errors import (
    AuthenticationError,
    ConflictError,
    InsufficientQuotaError,
    InvalidRequestError,
    NotFoundError,
    ServiceUnavailableError,
    StoreError,
    UpstreamError,
)
from passerelle.limits.counters import LocalCounters
from passerelle.limits.rules import BudgetRule, Limits
from passerelle.pipeline.auth import Auth
from passerelle.pipeline.budget import Budget, OutputCeiling
from passerelle.pipeline.context import Call
from passerelle.pipeline.idempotency import Idempotency
from passerelle.pipeline.inflight import InFlight
from passerelle.pipeline.margin import MarginFloor, tracking_rule
from passerelle.pipeline.parse import Parse
from passerelle.pipeline.resolve import Pricer, Resolve
from passerelle.pricing.catalogue import Catalogue
from passerelle.providers.base import Completion
from passerelle.store.idempotency import LocalIdempotency
from passerelle.store.journal import Journal
from passerelle.tenancy import ApiKey, KeyRing
from tests.unit.stages import (
    HI,
    NOW,
    FakeNext,
    api_key,
    call,
    completion,
    route,
    serve,
    stream,
)

# --- auth --------------------------------------------------------------------------------------


def keyring(*tenants: str) -> KeyRing:
    ring = KeyRing()
    for t in tenants:
        ring.add_secret(f"sk-{t}", t)
    return ring


async def test_auth_refuses_a_call_without_a_key_and_passes_nothing_on() -> None:
    downstream = FakeNext(completion())
    with pytest.raises(AuthenticationError, match="missing API key"):
        await serve(Auth(keyring("acme")), call(tenant=None, parsed=False), downstream)
    assert downstream.reached == 0


async def test_auth_refuses_a_key_it_does_not_know() -> None:
    c = call(tenant=None, parsed=False, headers={"Authorization": "Bearer sk-nobody"})
    downstream = FakeNext(completion())
    with pytest.raises(AuthenticationError, match="invalid API key"):
        await serve(Auth(keyring("acme")), c, downstream)
    assert downstream.reached == 0 and c.key is None


async def test_auth_names_the_tenant_of_its_key_before_passing_the_call_on() -> None:
    c = call(tenant=None, parsed=False, headers={"Authorization": "Bearer sk-globex"})
    downstream = FakeNext(completion())
    await serve(Auth(keyring("acme", "globex")), c, downstream)
    assert downstream.reached == 1
    assert c.key == api_key("globex") and c.tenant == "globex"


async def test_auth_fails_closed_when_the_ledger_cannot_check_a_new_key() -> None:
    async def unreachable(digest: str) -> ApiKey | None:
        raise StoreError("connection refused")

    c = call(tenant=None, parsed=False, headers={"Authorization": "Bearer sk-new"})
    downstream = FakeNext(completion())
    with pytest.raises(ServiceUnavailableError) as caught:
        await serve(Auth(KeyRing(lookup=unreachable)), c, downstream)
    assert caught.value.code == "ledger_unavailable" and downstream.reached == 0


# --- parse and resolve ---------------------------------------------------------------------------


async def test_parse_fills_the_call_and_strips_the_gateway_s_own_fields() -> None:
    body = {"messages": HI, "stream": True, "max_tokens": 40, "metadata": {"feature": "chat"}}
    c = call(body, parsed=False)
    await serve(Parse(), c, FakeNext(stream("a")))
    assert (c.model, c.stream, c.max_tokens, c.feature) == ("gpt-4o-mini", True, 40, "chat")
    assert "metadata" not in c.body  # never sent upstream


async def test_parse_refuses_a_bad_message_naming_its_param() -> None:
    c = call({"messages": [{"role": "robot", "content": "hi"}]}, parsed=False)
    downstream = FakeNext(completion())
    with pytest.raises(InvalidRequestError) as caught:
        await serve(Parse(), c, downstream)
    assert caught.value.param == "messages[0].role" and downstream.reached == 0


async def test_resolve_routes_a_known_model_and_refuses_an_unknown_one() -> None:
    routes = {"premium": route("premium", "big", "big-fallback")}
    downstream = FakeNext(completion())
    await serve(Resolve(routes), call({"model": "premium", "messages": HI}), downstream)
    assert downstream.received[0].targets == ("fake/big", "fake/big-fallback")

    with pytest.raises(NotFoundError) as caught:
        await serve(Resolve(routes), call({"model": "nope", "messages": HI}), downstream)
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
    assert downstream.reached == 1


# --- budget: admission, refusal, soft warning ----------------------------------------------------

PRICER = Pricer(Catalogue([]))
CEILING = OutputCeiling(tokens=1000)


def tenant_budget(usd: str, *, hard: bool = True) -> BudgetRule:
    return BudgetRule(
        scope="tenant:acme", label="tenant acme", usd=Decimal(usd), period="month", hard=hard
    )


def limits(*rules: BudgetRule) -> Limits:
    return Limits({"acme": [(r, None) for r in rules]}, {}, {}, {})


def budget(
    counters: LocalCounters, *rules: BudgetRule, floors: MarginFloor | None = None
) -> Budget:
    return Budget(limits(*rules), counters, PRICER, CEILING, floors)


async def test_budget_admits_a_call_it_can_pay_and_settles_it_to_the_real_cost() -> None:
    counters = LocalCounters(clock=lambda: NOW)
    rule = tenant_budget("1")
    downstream = FakeNext(completion(cost="0.0015"))
    # worst case: ~10 prompt tokens at $1/M + 1000 output tokens at $2/M, about $0.002
    await serve(budget(counters, rule), call({"messages": HI, "max_tokens": 1000}), downstream)
    assert downstream.reached == 1 and downstream.received[0].decision is None
    assert await counters.spent_nano(rule, NOW) == 1_500_000  # the real cost, not the worst case


async def test_budget_refuses_a_call_whose_worst_case_does_not_fit_before_it_goes_on() -> None:
    downstream = FakeNext(completion(cost="0.0001"))
    with pytest.raises(InsufficientQuotaError, match="budget exceeded: tenant acme") as caught:
        await serve(budget(LocalCounters(), tenant_budget("0.001")), call(), downstream)
    assert caught.value.code == "insufficient_quota" and "retry-after" in caught.value.headers
    assert downstream.reached == 0


async def test_budget_holds_a_call_without_max_tokens_to_the_ceiling_it_reserved() -> None:
    downstream = FakeNext(completion())
    await serve(budget(LocalCounters(), tenant_budget("1")), call(), downstream)
    assert downstream.received[0].max_tokens == CEILING.tokens


async def test_budget_lets_a_soft_budget_overrun_through_with_a_warning() -> None:
    downstream = FakeNext(completion(cost="0.002"))
    soft = tenant_budget("0.001", hard=False)
    await serve(budget(LocalCounters(), soft), call(), downstream)
    [seen] = downstream.received
    assert seen.response_headers["x-passerelle-budget-warning"] == "soft budget exceeded"
    assert seen.decision == "soft-budget exceeded: tenant acme month $0.001"


async def test_budget_releases_the_hold_of_a_call_that_failed_downstream() -> None:
    counters = LocalCounters()
    rule = tenant_budget("0.003")  # room for one worst case (~$0.002) at a time
    failing = FakeNext(raises=UpstreamError("upstream said 500", code="upstream_error"))
    with pytest.raises(UpstreamError):
        await serve(budget(counters, rule), call(), failing)
    downstream = FakeNext(completion(cost="0.001"))
    await serve(budget(counters, rule), call(), downstream)  # the failed call holds nothing
    assert downstream.reached == 1 and await counters.spent_nano(rule, NOW) == 1_000_000


# --- the margin floor: degrade or refuse ---------------------------------------------------------

ROUTES = {"premium": route("premium", degrade_to="cheap"), "cheap": route("cheap")}


def floors(action: Literal["degrade", "refuse"]) -> MarginFloor:
    """Tenant acme on plan pro: $1 a month, a floor at 20% of it ($0.20)."""
    plan = PlanConfig(
        name="pro",
        monthly_usd=Decimal(1),
        margin_floor=MarginFloorConfig(max_cost_share=Decimal("0.2"), action=action),
    )
    book = RevenueBook(
        Config.model_validate(
            {"plans": [plan.model_dump()], "tenants": [{"name": "acme", "plan": "pro"}]}
        )
    )
    return MarginFloor({"pro": plan}, book, ROUTES)


async def test_the_margin_floor_moves_a_tenant_past_it_to_the_cheaper_model() -> None:
    stage = budget(LocalCounters(), tracking_rule("acme"), floors=floors("degrade"))
    first = FakeNext(completion(cost="0.25"))  # served as asked, and takes the month past $0.20
    await serve(stage, call(route=ROUTES["premium"]), first)
    assert first.received[0].model == "premium"

    after = FakeNext(completion(cost="0.001"))
    await serve(stage, call(route=ROUTES["premium"]), after)
    [seen] = after.received
    assert (seen.model, seen.targets) == ("cheap", ("fake/cheap",))
    assert seen.response_headers["x-passerelle-degraded"] == "margin-floor"
    assert seen.decision == "degraded: margin floor premium -> cheap"


async def test_the_margin_floor_refuses_a_tenant_past_it_when_its_plan_says_so() -> None:
    stage = budget(LocalCounters(), tracking_rule("acme"), floors=floors("refuse"))
    await serve(stage, call(route=ROUTES["premium"]), FakeNext(completion(cost="0.25")))
    downstream = FakeNext(completion())
    c = call(route=ROUTES["premium"])
    with pytest.raises(InsufficientQuotaError, match="margin floor reached") as caught:
        await serve(stage, c, downstream)
    assert caught.value.code == "margin_floor" and downstream.reached == 0
    assert c.annotations["decision"] == "refused: margin floor (20% of revenue)"


# --- idempotency: replay and conflict ------------------------------------------------------------


def keyed(
    key: str = "k-1", *, tenant: str = "acme", text: str = "hi", streamed: bool = False
) -> Call:
    body = {"messages": [{"role": "user", "content": text}], "stream": streamed}
    return call(body, tenant=tenant, headers={"Idempotency-Key": key})


async def test_a_retry_with_the_same_key_gets_the_first_answer_without_going_on() -> None:
    stage = Idempotency(LocalIdempotency(clock=lambda: 0.0))
    first = keyed()
    await serve(stage, first, FakeNext(completion("the first answer", cost="0.002")))

    retry, downstream = keyed(), FakeNext(completion("a second answer"))
    await serve(stage, retry, downstream)
    assert downstream.reached == 0
    assert isinstance(retry.result, Completion) and isinstance(first.result, Completion)
    assert retry.result.body == first.result.body
    assert retry.status == "replayed" and retry.usage is not None and retry.usage.output_tokens == 0
    assert retry.response_headers["x-passerelle-idempotent-replay"] == first.request_id


async def test_a_streamed_answer_is_replayed_event_for_event() -> None:
    stage = Idempotency(LocalIdempotency(clock=lambda: 0.0))
    events = await serve(stage, keyed(streamed=True), FakeNext(stream("Hel", "lo", " there")))
    assert events is not None and len(events) == 3

    downstream = FakeNext(stream("other"))
    assert await serve(stage, keyed(streamed=True), downstream) == events
    assert downstream.reached == 0


async def test_the_same_key_with_another_body_is_a_conflict() -> None:
    stage = Idempotency(LocalIdempotency(clock=lambda: 0.0))
    await serve(stage, keyed(text="hi"), FakeNext(completion()))
    downstream = FakeNext(completion())
    with pytest.raises(ConflictError) as caught:
        await serve(stage, keyed(text="something else"), downstream)
    assert caught.value.code == "idempotency_key_reused" and downstream.reached == 0


async def test_a_key_whose_first_call_is_still_running_is_a_conflict() -> None:
    stage = Idempotency(LocalIdempotency(clock=lambda: 0.0))
    running = keyed()
    await stage(running, FakeNext(completion()))  # answered, not finished: still in flight
    with pytest.raises(ConflictError) as caught:
        await serve(stage, keyed(), FakeNext(completion()))
    assert caught.value.code == "idempotency_key_in_progress"
    await running.finish()


async def test_a_failed_first_call_is_run_again_and_keys_are_per_tenant() -> None:
    stage = Idempotency(LocalIdempotency(clock=lambda: 0.0))
    with pytest.raises(UpstreamError):
        await serve(stage, keyed(), FakeNext(raises=UpstreamError("upstream said 500")))
    again = FakeNext(completion("now it works"))
    await serve(stage, keyed(), again)
    assert again.reached == 1  # nothing stored from the failure

    other_tenant = FakeNext(completion())
    await serve(stage, keyed(tenant="globex"), other_tenant)
    assert other_tenant.reached == 1  # acme's answer is not globex's


# --- in flight: the journal ----------------------------------------------------------------------


def journal_lines(j: Journal) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in j.path.read_bytes().splitlines()]


async def test_a_call_is_journaled_before_it_goes_on_and_ended_once_its_row_is_in(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    journal.open()
    c = call({"messages": HI, "user": "u-1"}, tenant="acme")

    async def row_committed(done: Call) -> None:  # what the meter, earlier in the chain, does
        journal.recorded(done.request_id)

    c.defer(row_committed)
    seen: list[int] = []
    downstream = FakeNext(completion(), during=lambda _: seen.append(journal.open_calls))
    await serve(InFlight(journal), c, downstream)
    assert seen == [1]  # begun before anything upstream could cost money
    kinds = [(line["k"], line["id"]) for line in journal_lines(journal)]
    assert kinds == [("b", c.request_id)]  # its end goes with the journal's next line
    journal.begin("next", {"at": 1.0})
    kinds = [(line["k"], line["id"]) for line in journal_lines(journal)]
    assert kinds == [("b", c.request_id), ("e", c.request_id), ("b", "next")]
    assert journal_lines(journal)[0]["tenant"] == "acme" and journal.open_calls == 1
    journal.close()


async def test_a_call_with_no_row_stays_open_for_the_next_start_to_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    c = call({"messages": HI, "user": "u-2"}, tenant="acme")
    with pytest.raises(UpstreamError):
        await serve(InFlight(journal), c, FakeNext(raises=UpstreamError("cut mid-answer")))
    assert journal.open_calls == 1  # it went upstream and the ledger never had it
    assert journal._fd is not None
    os.close(journal._fd)  # the process dies: its lock goes with its descriptor
    journal._fd = None
    [found] = Journal(tmp_path).take_over()
    assert (found.request_id, found.begun, found.tenant, found.end_user) == (
        c.request_id,
        True,
        "acme",
        "u-2",
    )
