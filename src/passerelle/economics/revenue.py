"""What each tenant pays: plans, recorded revenue, and the revenue that counts for a month.

Revenue comes from the configuration (``plans``, ``revenue``), from the admin API and from
``passerelle revenue import`` (a billing export). Recorded revenue for a month wins over the plan's
list price. The book lives in memory and is refreshed from the store in the background, so the
margin floor never waits on a database.

Every way in checks an entry the same way (``revenue_entry``): a month from 1970-01 to 2999-12, a
tenant name as ``tenancy`` allows it, and an amount from 0 to ``MAX_AMOUNT`` ($9,000,000) with at
most six decimal places, so no figure can overflow the ledger's 64-bit pico-dollar column.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal, InvalidOperation

from passerelle.config.schema import Config
from passerelle.errors import InvalidRequestError
from passerelle.months import check_month
from passerelle.store.records import RevenueEntry
from passerelle.tenancy import tenant_name_problem

# the ledger keeps amounts in pico-dollars, in 64-bit integers (at most ~9.22e18): $9M a month
MAX_AMOUNT = Decimal(9_000_000)
AMOUNT_PLACES = 6
MAX_AMOUNT_TEXT = 40


class RevenueBook:
    def __init__(self, config: Config) -> None:
        self._plan_of = {t.name: t.plan for t in config.tenants}
        self._plans = {p.name: p for p in config.plans}
        self._configured = {(r.tenant, r.period): r.amount for r in config.revenue}
        self._recorded: dict[tuple[str, str], Decimal] = {}

    def replace_recorded(self, entries: list[RevenueEntry]) -> None:
        self._recorded = {(e.tenant, e.period): e.amount for e in entries}

    def record(self, entry: RevenueEntry) -> None:
        self._recorded[(entry.tenant, entry.period)] = entry.amount

    def plan(self, tenant: str) -> str | None:
        return self._plan_of.get(tenant)

    def actual(self, tenant: str, period: str) -> Decimal | None:
        """Revenue recorded for the month (store first, then configuration), if any."""
        found = self._recorded.get((tenant, period))
        return found if found is not None else self._configured.get((tenant, period))

    def revenue(self, tenant: str, period: str) -> tuple[Decimal | None, str]:
        """The revenue that counts for a month, and where it came from."""
        actual = self.actual(tenant, period)
        if actual is not None:
            return actual, "recorded"
        plan = self._plans.get(self._plan_of.get(tenant) or "")
        if plan is not None:
            return plan.monthly_usd, f"plan {plan.name}"
        return None, "unknown"

    def tenants(self) -> set[str]:
        return (
            set(self._plan_of) | {t for t, _ in self._recorded} | {t for t, _ in self._configured}
        )


def parse_revenue_csv(text: str, source: str) -> list[RevenueEntry]:
    """A billing export: columns tenant, period (YYYY-MM), amount, currency (USD)."""
    reader = csv.DictReader(io.StringIO(text))
    need = {"tenant", "period", "amount"}
    if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames}:
        raise InvalidRequestError(
            f"{source}: the header must name the columns tenant, period, amount (and currency)"
        )
    entries = []
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        # the file's line, not the row's index: blank lines and quoted newlines count
        entries.append(revenue_entry(row, f"{source}:{reader.line_num}"))
    return entries


def parse_amount(text: str, where: str) -> Decimal:
    """Dollars, from 0 to ``MAX_AMOUNT``, to the micro-dollar at most."""
    try:
        amount = Decimal(text) if len(text) <= MAX_AMOUNT_TEXT else None
    except InvalidOperation:
        amount = None
    if amount is None:
        raise InvalidRequestError(f"{where}: amount is not a number", param="amount")
    if not amount.is_finite() or amount < 0:
        raise InvalidRequestError(f"{where}: amount must be a non-negative number", param="amount")
    if amount > MAX_AMOUNT:
        raise InvalidRequestError(
            f"{where}: amount must be at most {MAX_AMOUNT:,f} a month", param="amount"
        )
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -AMOUNT_PLACES:
        raise InvalidRequestError(
            f"{where}: amount has more than {AMOUNT_PLACES} decimal places", param="amount"
        )
    return amount


def revenue_entry(row: dict[str, str], where: str) -> RevenueEntry:
    tenant, period = row.get("tenant", ""), row.get("period", "")
    currency = (row.get("currency") or "USD").upper()
    if not tenant:
        raise InvalidRequestError(f"{where}: tenant is empty", param="tenant")
    problem = tenant_name_problem(tenant)
    if problem is not None:
        raise InvalidRequestError(f"{where}: {problem}", param="tenant")
    check_month(period, f"{where}: ")
    if currency != "USD":
        raise InvalidRequestError(
            f"{where}: only USD is supported, got {currency[:10]}", param="currency"
        )
    amount = parse_amount(str(row.get("amount", "")), where)
    return RevenueEntry(
        tenant=tenant, period=period, amount=amount, currency=currency, source=where.split(":")[0]
    )
