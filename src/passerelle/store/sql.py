"""The ledger's schema and queries, shared by the SQLite and PostgreSQL stores.

The usage table is append-only, with a unique key per (request, attempt) so a retried write can
never charge twice. Reports aggregate in SQL over indexed columns; money is summed as integers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from passerelle.store.records import (
    COLUMNS,
    GROUP_COLUMNS,
    RevenueEntry,
    Status,
    UsageRecord,
    UsageRow,
    from_pico,
    to_pico,
)
from passerelle.tenancy import ApiKey

SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS usage (
        request_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        tenant TEXT,
        key_id TEXT,
        feature TEXT,
        end_user TEXT,
        endpoint TEXT NOT NULL,
        model TEXT,
        provider TEXT,
        upstream_model TEXT,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        usage_reported INTEGER NOT NULL,
        cost_pusd BIGINT,
        price_version TEXT,
        latency_ms DOUBLE PRECISION NOT NULL,
        ttft_ms DOUBLE PRECISION,
        status TEXT NOT NULL,
        error_code TEXT,
        stream INTEGER NOT NULL,
        decision TEXT,
        saved_pusd BIGINT NOT NULL DEFAULT 0,
        saving_source TEXT,
        cache TEXT,
        routed_to TEXT,
        route_reason TEXT,
        route_saved_pusd BIGINT,
        PRIMARY KEY (request_id, attempt)
    )
    """,
    "CREATE INDEX IF NOT EXISTS usage_ts ON usage (ts)",
    "CREATE INDEX IF NOT EXISTS usage_tenant_ts ON usage (tenant, ts)",
    """
    CREATE TABLE IF NOT EXISTS api_keys (
        digest TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        name TEXT,
        created_at DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS revenue (
        tenant TEXT NOT NULL,
        period TEXT NOT NULL,
        amount_pusd BIGINT NOT NULL,
        currency TEXT NOT NULL,
        source TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant, period)
    )
    """,
]

REVENUE_COLUMNS = ("tenant", "period", "amount_pusd", "currency", "source", "updated_at")
SELECT_REVENUE = (
    "SELECT tenant, period, amount_pusd, currency, source FROM revenue ORDER BY period, tenant"
)


# both writers: the most rows one transaction commits, and how many may wait for it
MAX_BATCH = 512
QUEUE_SIZE = 10_000

KEY_COLUMNS = "key_id, tenant, digest, name"


def insert_key_sql(placeholder: str) -> str:
    marks = ", ".join(_mark(placeholder, i + 1) for i in range(5))
    return f"INSERT INTO api_keys (digest, key_id, tenant, name, created_at) VALUES ({marks})"


def key_row(key: ApiKey) -> tuple[object, ...]:
    """The values ``insert_key_sql`` takes, in its order."""
    return (key.digest, key.key_id, key.tenant, key.name, time.time())


def find_key_sql(placeholder: str) -> str:
    return f"SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = {_mark(placeholder, 1)}"


def list_keys_sql(placeholder: str, by_tenant: bool) -> str:
    where = f" WHERE tenant = {_mark(placeholder, 1)}" if by_tenant else ""
    return f"SELECT {KEY_COLUMNS} FROM api_keys{where} ORDER BY created_at"


def records_sql(placeholder: str) -> str:
    return (
        f"SELECT {', '.join(COLUMNS)} FROM usage WHERE request_id = {_mark(placeholder, 1)} "
        "ORDER BY attempt"
    )


def upsert_revenue_sql(placeholder: str) -> str:
    marks = ", ".join(_mark(placeholder, i + 1) for i in range(len(REVENUE_COLUMNS)))
    return (
        f"INSERT INTO revenue ({', '.join(REVENUE_COLUMNS)}) VALUES ({marks}) "
        "ON CONFLICT (tenant, period) DO UPDATE SET amount_pusd = excluded.amount_pusd, "
        "currency = excluded.currency, source = excluded.source, updated_at = excluded.updated_at"
    )


def revenue_row(entry: RevenueEntry) -> tuple[object, ...]:
    return (
        entry.tenant,
        entry.period,
        to_pico(entry.amount),
        entry.currency,
        entry.source,
        time.time(),
    )


def revenue_of(r: Sequence[Any]) -> RevenueEntry:
    return RevenueEntry(
        tenant=r[0], period=r[1], amount=from_pico(int(r[2])), currency=r[3], source=r[4]
    )


def _mark(placeholder: str, n: int) -> str:
    """The n-th (1-based) parameter: ``"?"`` stays ``?``; ``"${i}"`` becomes ``$1``, ``$2``..."""
    return placeholder.format(i=n) if "{i}" in placeholder else placeholder


def insert_sql(placeholder: str) -> str:
    marks = ", ".join(_mark(placeholder, i + 1) for i in range(len(COLUMNS)))
    return (
        f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({marks}) "
        "ON CONFLICT (request_id, attempt) DO NOTHING"
    )


def usage_sql(group_by: Sequence[str], placeholder: str, has_since: bool, has_until: bool) -> str:
    for g in group_by:
        if g not in GROUP_COLUMNS:
            raise ValueError(g)
    cols = [GROUP_COLUMNS[g] for g in group_by]
    where = []
    n = 0
    for present, op in ((has_since, ">="), (has_until, "<")):
        if present:
            n += 1
            where.append(f"ts {op} {_mark(placeholder, n)}")
    select = ", ".join(
        [
            *cols,
            # a call is one request however many attempts it took; a failed attempt is a row
            # of its own (its cost, if the upstream reported any, still adds up below)
            f"SUM(CASE WHEN status <> '{Status.ATTEMPT_FAILED}' THEN 1 ELSE 0 END)",
            "COALESCE(SUM(input_tokens), 0)",
            "COALESCE(SUM(output_tokens), 0)",
            "COALESCE(SUM(cached_tokens), 0)",
            "COALESCE(SUM(cost_pusd), 0)",
            f"SUM(CASE WHEN cost_pusd IS NULL AND status <> '{Status.ERROR}' THEN 1 ELSE 0 END)",
            f"SUM(CASE WHEN status = '{Status.ERROR}' THEN 1 ELSE 0 END)",
        ]
    )
    sql = f"SELECT {select} FROM usage"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if cols:
        sql += " GROUP BY " + ", ".join(cols) + " ORDER BY " + ", ".join(cols)
    return sql


def usage_rows(group_by: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[UsageRow]:
    """Report rows from ``usage_sql`` results, in one order on every engine.

    Groups sort with NULL first, then by code point (SQLite's order; PostgreSQL would put NULL
    last and use its locale). An empty ledger's single all-zero row is dropped, and so is a
    group of failed attempts only (no request, nothing spent). Sums arrive as
    ``int`` (SQLite) or ``Decimal`` (PostgreSQL ``SUM(bigint)``); both become ``int``.
    """
    n = len(group_by)
    out = [
        UsageRow(
            group={g: r[i] for i, g in enumerate(group_by)},
            requests=int(r[n]),
            input_tokens=int(r[n + 1]),
            output_tokens=int(r[n + 2]),
            cached_tokens=int(r[n + 3]),
            cost_usd=from_pico(int(r[n + 4])),
            unpriced_requests=int(r[n + 5] or 0),
            errors=int(r[n + 6] or 0),
        )
        for r in rows
        if r[n] or r[n + 4]
    ]
    out.sort(key=lambda u: [(v is not None, v or "") for v in u.group.values()])
    return out


def record_of(r: Sequence[Any]) -> UsageRecord:
    """The ``UsageRecord`` a row of ``COLUMNS`` holds (the inverse of ``records.row_of``)."""
    d = dict(zip(COLUMNS, r, strict=True))
    d.pop("day")
    pusd = d.pop("cost_pusd")
    saved = d.pop("saved_pusd")
    route_saved = d.pop("route_saved_pusd")
    return UsageRecord(
        **{
            **d,
            "usage_reported": bool(d["usage_reported"]),
            "stream": bool(d["stream"]),
            "status": Status(d["status"]),
        },
        cost_usd=None if pusd is None else from_pico(int(pusd)),
        saved_usd=from_pico(int(saved or 0)),
        route_saved_usd=None if route_saved is None else from_pico(int(route_saved)),
    )
