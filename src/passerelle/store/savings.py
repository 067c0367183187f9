"""The savings report's query: what calls paid, what they saved and why, grouped as asked.

Every call's row holds the cost it paid (``cost_pusd``), what it did not pay (``saved_pusd``) and
the source of that saving (``saving_source``: ``cache_exact`` for an answer served from the exact
cache; other sources, such as a cheaper route, add their own value), and the cache's outcome
(``cache``: hit, miss, refresh, bypass). So the cost of serving every request without any saving is
paid plus saved, for any grouping, and one query answers the whole report: rows are grouped by the
columns asked for and by source, then folded into one ``SavingsRow`` per group. Hit rate is hits
over lookups (hits and misses: a call the cache did not look up is not counted against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from passerelle.pricing.cost import usd_exact
from passerelle.store.records import GROUP_COLUMNS, CacheOutcome, Status, from_pico

NO_SOURCE = "none"  # the key of calls that saved nothing in ``saved_by_source``


@dataclass(slots=True)
class SavingsRow:
    """One group of the savings report."""

    group: dict[str, str | None]
    requests: int = 0
    lookups: int = 0  # calls the cache looked up: hits and misses
    hits: int = 0
    cost_usd: Decimal = Decimal(0)  # what was paid
    saved_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0
    saved_by_source: dict[str, Decimal] = field(default_factory=dict)
    requests_by_source: dict[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None

    @property
    def cost_without_savings_usd(self) -> Decimal:
        return self.cost_usd + self.saved_usd

    def as_json(self) -> dict[str, object]:
        return {
            **self.group,
            "requests": self.requests,
            "cache_lookups": self.lookups,
            "cache_hits": self.hits,
            "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
            "cost_usd": usd_exact(self.cost_usd),
            "saved_usd": usd_exact(self.saved_usd),
            "cost_without_savings_usd": usd_exact(self.cost_without_savings_usd),
            "unpriced_requests": self.unpriced_requests,
            "by_source": {
                source: {
                    "requests": self.requests_by_source.get(source, 0),
                    "saved_usd": usd_exact(amount),
                }
                for source, amount in sorted(self.saved_by_source.items())
            },
        }


def savings_sql(group_by: Sequence[str], placeholder: str, has_since: bool, has_until: bool) -> str:
    for g in group_by:
        if g not in GROUP_COLUMNS:
            raise ValueError(g)
    cols = [GROUP_COLUMNS[g] for g in group_by]
    where = [f"status <> '{Status.ATTEMPT_FAILED}'"]  # a call is one request, however many tries
    n = 0
    for present, op in ((has_since, ">="), (has_until, "<")):
        if present:
            n += 1
            mark = placeholder.format(i=n) if "{i}" in placeholder else placeholder
            where.append(f"ts {op} {mark}")
    hit, miss = CacheOutcome.HIT.value, CacheOutcome.MISS.value
    select = ", ".join(
        [
            *cols,
            "saving_source",
            "COUNT(*)",
            f"SUM(CASE WHEN cache IN ('{hit}', '{miss}') THEN 1 ELSE 0 END)",
            f"SUM(CASE WHEN cache = '{hit}' THEN 1 ELSE 0 END)",
            "COALESCE(SUM(cost_pusd), 0)",
            "COALESCE(SUM(saved_pusd), 0)",
            f"SUM(CASE WHEN cost_pusd IS NULL AND status <> '{Status.ERROR}' THEN 1 ELSE 0 END)",
        ]
    )
    groups = ", ".join([*cols, "saving_source"])
    return f"SELECT {select} FROM usage WHERE {' AND '.join(where)} GROUP BY {groups}"


def savings_rows(group_by: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[SavingsRow]:
    """One row per group (NULL first, then by code point, as ``usage_rows`` sorts), each with
    its savings split by source."""
    n = len(group_by)
    out: dict[tuple[str | None, ...], SavingsRow] = {}
    for r in rows:
        group = tuple(r[:n])
        row = out.get(group)
        if row is None:
            row = out[group] = SavingsRow(group=dict(zip(group_by, group, strict=True)))
        source = r[n] or NO_SOURCE
        requests, saved = int(r[n + 1]), from_pico(int(r[n + 5]))
        row.requests += requests
        row.lookups += int(r[n + 2] or 0)
        row.hits += int(r[n + 3] or 0)
        row.cost_usd += from_pico(int(r[n + 4]))
        row.saved_usd += saved
        row.unpriced_requests += int(r[n + 6] or 0)
        row.saved_by_source[source] = row.saved_by_source.get(source, Decimal(0)) + saved
        row.requests_by_source[source] = row.requests_by_source.get(source, 0) + requests
    ordered = sorted(
        out.values(), key=lambda s: [(v is not None, v or "") for v in s.group.values()]
    )
    return ordered


def combined(rows: Sequence[SavingsRow]) -> SavingsRow:
    """The totals of a report: every group's figures added up."""
    total = SavingsRow(group={})
    for r in rows:
        total.requests += r.requests
        total.lookups += r.lookups
        total.hits += r.hits
        total.cost_usd += r.cost_usd
        total.saved_usd += r.saved_usd
        total.unpriced_requests += r.unpriced_requests
        for source, amount in r.saved_by_source.items():
            total.saved_by_source[source] = total.saved_by_source.get(source, Decimal(0)) + amount
        for source, n in r.requests_by_source.items():
            total.requests_by_source[source] = total.requests_by_source.get(source, 0) + n
    return total
