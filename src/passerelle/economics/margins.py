"""Margins: what each tenant pays against what its LLM calls cost, per month and per feature.

Revenue is the month's recorded revenue, else the tenant's plan price (see ``revenue.py``). Gross
margin is revenue minus LLM cost; the cost share is cost over revenue. Tenants come out worst
first: those with cost and no known revenue, then by cost share. The trend compares the cost share
with the months before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from passerelle.economics.revenue import RevenueBook
from passerelle.months import month_bounds, previous_month
from passerelle.pricing.cost import usd_exact
from passerelle.store.base import Ledger

CENT = Decimal("0.01")
SHARE = Decimal("0.0001")


def share(cost: Decimal, revenue: Decimal | None) -> Decimal | None:
    if revenue is None or revenue == 0:
        return None
    return (cost / revenue).quantize(SHARE)


@dataclass
class FeatureMargin:
    feature: str | None
    requests: int
    cost_usd: Decimal
    share_of_revenue: Decimal | None


@dataclass
class TenantMargin:
    tenant: str
    period: str
    revenue_usd: Decimal | None
    revenue_source: str
    requests: int
    cost_usd: Decimal
    features: list[FeatureMargin] = field(default_factory=list)
    trend: list[tuple[str, Decimal | None]] = field(default_factory=list)  # earlier months' shares

    @property
    def gross_margin_usd(self) -> Decimal | None:
        return None if self.revenue_usd is None else self.revenue_usd - self.cost_usd

    @property
    def cost_share(self) -> Decimal | None:
        return share(self.cost_usd, self.revenue_usd)

    @property
    def margin_pct(self) -> Decimal | None:
        s = self.cost_share
        return None if s is None else ((1 - s) * 100).quantize(CENT)

    @property
    def direction(self) -> str:
        earlier = [s for _, s in self.trend if s is not None]
        now = self.cost_share
        if not earlier or now is None:
            return "new"
        if now > earlier[0] * Decimal("1.05"):
            return "worse"
        if now < earlier[0] * Decimal("0.95"):
            return "better"
        return "flat"

    def sort_key(self) -> tuple[int, Decimal]:
        s = self.cost_share
        if s is None:
            return (0 if self.cost_usd > 0 else 2, -self.cost_usd)
        return (1, -s)

    def as_json(self) -> dict[str, object]:
        def usd(v: Decimal | None) -> str | None:
            return None if v is None else usd_exact(v)

        def d(v: Decimal | None, q: Decimal) -> str | None:
            return None if v is None else str(v.quantize(q))

        return {
            "tenant": self.tenant,
            "period": self.period,
            "revenue_usd": usd(self.revenue_usd),
            "revenue_source": self.revenue_source,
            "requests": self.requests,
            "llm_cost_usd": usd(self.cost_usd),
            "gross_margin_usd": usd(self.gross_margin_usd),
            "margin_pct": d(self.margin_pct, CENT),
            "cost_share": d(self.cost_share, SHARE),
            "trend": [{"period": p, "cost_share": d(s, SHARE)} for p, s in self.trend],
            "direction": self.direction,
            "features": [
                {
                    "feature": f.feature,
                    "requests": f.requests,
                    "llm_cost_usd": usd(f.cost_usd),
                    "share_of_revenue": d(f.share_of_revenue, SHARE),
                }
                for f in self.features
            ],
        }


async def margins(
    ledger: Ledger, book: RevenueBook, period: str, months: int = 3
) -> list[TenantMargin]:
    """The margin of every tenant with revenue or cost in ``period``, worst first."""
    start, end = month_bounds(period)
    rows = await ledger.usage(["tenant", "feature"], start, end)
    tenants: dict[str, TenantMargin] = {}
    for name in sorted(book.tenants()):  # ties in the report keep one order everywhere
        revenue, source = book.revenue(name, period)
        tenants[name] = TenantMargin(name, period, revenue, source, 0, Decimal(0))
    for r in rows:
        tenant = r.group["tenant"]
        if tenant is None:
            continue
        if tenant not in tenants:
            revenue, source = book.revenue(tenant, period)
            tenants[tenant] = TenantMargin(tenant, period, revenue, source, 0, Decimal(0))
        t = tenants[tenant]
        served = r.requests - r.errors  # refusals (budget, margin floor) cost nothing
        t.requests += served
        t.cost_usd += r.cost_usd
        t.features.append(FeatureMargin(r.group["feature"], served, r.cost_usd, None))
    for t in tenants.values():
        for f in t.features:
            f.share_of_revenue = share(f.cost_usd, t.revenue_usd)
        t.features.sort(key=lambda f: -f.cost_usd)
    earlier = period
    for _ in range(months - 1):
        earlier = previous_month(earlier)
        s, e = month_bounds(earlier)
        costs = {r.group["tenant"]: r.cost_usd for r in await ledger.usage(["tenant"], s, e)}
        for t in tenants.values():
            revenue, _ = book.revenue(t.tenant, earlier)
            t.trend.append(
                (
                    earlier,
                    share(costs.get(t.tenant, Decimal(0)), revenue) if t.tenant in costs else None,
                )
            )
    return sorted(tenants.values(), key=TenantMargin.sort_key)
