"""The margin floor: a tenant whose LLM cost passes a share of what it pays is degraded or refused.

Per plan, ``margin_floor: {max_cost_share: 0.2, action: degrade}``: once the tenant's cost this
month exceeds 20% of its revenue for the month (recorded revenue, else the plan's price), each
request is either refused (429, code ``margin_floor``) or served by the next cheaper model of the
route's ``degrade_to`` chain, with the header ``x-passerelle-degraded: margin-floor``. Every such
decision is written to the ledger with the call.

The month's cost is what the budget counters hold for the tenant (in memory or Redis): spent plus
what calls in flight have reserved at their worst case, never a database query on the request
path. The floor is not a stage of its own: it is checked by the budget stage inside the atomic
admission that reserves the call (``limits.counters.Floor``), so a burst, even over several
replicas, cannot pass it between a check and a reservation. The first call past the floor is the
last served as asked; the calls that find it in flight are degraded or refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from passerelle.config.schema import PlanConfig
from passerelle.economics.revenue import RevenueBook
from passerelle.errors import InsufficientQuotaError
from passerelle.limits.counters import Floor
from passerelle.limits.periods import period_id
from passerelle.limits.rules import BudgetRule, to_nano
from passerelle.pipeline.context import Call
from passerelle.pipeline.targets import Route


def tracking_rule(tenant: str) -> BudgetRule:
    """The tenant's month-to-date cost, counted whether or not it has a budget."""
    return BudgetRule(
        scope=f"tenant:{tenant}",
        label=f"tenant {tenant}",
        usd=Decimal(1_000_000),
        period="month",
        hard=False,
    )


@dataclass(frozen=True, slots=True)
class FloorCheck:
    """A call's margin floor: what admission checks, and what to do past it."""

    floor: Floor
    action: str  # degrade | refuse
    pct: str  # the share of revenue, for messages: "20%"


class MarginFloor:
    def __init__(
        self, plans: dict[str, PlanConfig], book: RevenueBook, routes: dict[str, Route]
    ) -> None:
        self._plans = plans
        self._book = book
        self._routes = routes

    def check_for(self, call: Call) -> FloorCheck | None:
        """The floor the call's admission must respect; None when its tenant's plan has none."""
        tenant = call.tenant
        assert tenant is not None
        plan = self._plans.get(self._book.plan(tenant) or "")
        floor = plan.margin_floor if plan else None
        if floor is None:
            return None
        revenue, _ = self._book.revenue(tenant, period_id("month", call.received_at))
        # past the floor: cost over the share of revenue (any cost at all, without revenue)
        limit = to_nano((revenue or Decimal(0)) * floor.max_cost_share)
        return FloorCheck(
            floor=Floor(rule=tracking_rule(tenant), limit_nano=limit),
            action=floor.action,
            pct=f"{floor.max_cost_share * 100:.0f}%",
        )

    def apply(self, call: Call, check: FloorCheck) -> None:
        """The call found its tenant past the floor: refuse it, or move it to the cheaper model."""
        tenant = call.tenant
        if check.action == "refuse":
            call.annotate(f"refused: margin floor ({check.pct} of revenue)")
            raise InsufficientQuotaError(
                f"margin floor reached for tenant {tenant}: LLM cost this month is over "
                f"{check.pct} of its revenue",
                code="margin_floor",
            )
        assert call.route is not None
        cheaper = call.route.degrade_to
        if cheaper is None:
            call.annotate(
                f"margin floor ({check.pct}) passed; {call.route.model} has no cheaper model"
            )
            return
        original = call.route.model
        call.reroute(self._routes[cheaper])  # the call's filters apply to the cheaper route too
        call.annotate(f"degraded: margin floor {original} -> {cheaper}")
        call.response_headers["x-passerelle-degraded"] = "margin-floor"
