"""The margin floor: a tenant whose LLM cost passes a share of what it pays is degraded or refused.

Per plan, ``margin_floor: {max_cost_share: 0.2, action: degrade}``: once the tenant's cost this
month exceeds 20% of its revenue for the month (recorded revenue, else the plan's price), each
request is either refused (429, code ``margin_floor``) or served by the next cheaper model of the
route's ``degrade_to`` chain, with the header ``x-passerelle-degraded: margin-floor``. Every such
decision is written to the ledger with the call. The month's cost comes from the same counters as
budgets (in memory or Redis), never from a database query on the request path.
"""

from __future__ import annotations

from decimal import Decimal

from passerelle.config.schema import PlanConfig
from passerelle.economics.revenue import RevenueBook
from passerelle.errors import RateLimitError, ServiceUnavailableError, StoreError
from passerelle.limits.counters import Counters
from passerelle.limits.periods import period_id
from passerelle.limits.rules import BudgetRule, from_nano
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.resolve import Route


def tracking_rule(tenant: str) -> BudgetRule:
    """The tenant's month-to-date cost, counted whether or not it has a budget."""
    return BudgetRule(
        scope=f"tenant:{tenant}",
        label=f"tenant {tenant}",
        usd=Decimal(1_000_000),
        period="month",
        hard=False,
    )


class MarginFloor:
    def __init__(
        self,
        plans: dict[str, PlanConfig],
        book: RevenueBook,
        counters: Counters,
        routes: dict[str, Route],
    ) -> None:
        self._plans = plans
        self._book = book
        self._counters = counters
        self._routes = routes

    async def __call__(self, call: Call, next: Next) -> None:
        tenant = call.tenant
        assert tenant is not None
        plan = self._plans.get(self._book.plan(tenant) or "")
        floor = plan.margin_floor if plan else None
        if floor is None:
            await next(call)
            return
        month = period_id("month", call.received_at)
        try:
            cost = from_nano(
                await self._counters.spent_nano(tracking_rule(tenant), call.received_at)
            )
        except StoreError as exc:
            raise ServiceUnavailableError(
                "margin state is unreachable; the request is refused rather than passed unchecked",
                code="budget_store_unavailable",
            ) from exc
        revenue, _ = self._book.revenue(tenant, month)
        share_limit = floor.max_cost_share
        over = cost > 0 and (not revenue or cost / revenue > share_limit)
        if over:
            self._apply(call, tenant, floor.action, f"{share_limit * 100:.0f}%")
        await next(call)

    def _apply(self, call: Call, tenant: str, action: str, pct: str) -> None:
        if action == "refuse":
            call.annotate(f"refused: margin floor ({pct} of revenue)")
            err = RateLimitError(
                f"margin floor reached for tenant {tenant}: LLM cost this month is over {pct} "
                "of its revenue",
                code="margin_floor",
            )
            err.type = "insufficient_quota"
            raise err
        cheaper = call.route.degrade_to
        if cheaper is None:
            call.annotate(f"margin floor ({pct}) passed; {call.route.model} has no cheaper model")
            return
        original = call.route.model
        call.route = self._routes[cheaper]
        call.annotate(f"degraded: margin floor {original} -> {call.route.model}")
        call.response_headers["x-passerelle-degraded"] = "margin-floor"
