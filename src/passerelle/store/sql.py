"""The ledger's schema and queries, shared by the SQLite and PostgreSQL stores.

The usage table is append-only, with a unique key per (request, attempt) so a retried write can
never charge twice. Reports aggregate in SQL over indexed columns; money is summed as integers.
"""

from __future__ import annotations

from collections.abc import Sequence

from passerelle.store.records import COLUMNS, GROUP_COLUMNS

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
]


def insert_sql(placeholder: str) -> str:
    marks = ", ".join(
        placeholder.format(i=i + 1) if "{i}" in placeholder else placeholder
        for i in range(len(COLUMNS))
    )
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
            where.append(f"ts {op} " + placeholder.format(i=n) if "{i}" in placeholder
                         else f"ts {op} {placeholder}")
    select = ", ".join(cols + [
        "COUNT(*)",
        "COALESCE(SUM(input_tokens), 0)",
        "COALESCE(SUM(output_tokens), 0)",
        "COALESCE(SUM(cached_tokens), 0)",
        "COALESCE(SUM(cost_pusd), 0)",
        "SUM(CASE WHEN cost_pusd IS NULL AND status <> 'error' THEN 1 ELSE 0 END)",
        "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END)",
    ])
    sql = f"SELECT {select} FROM usage"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if cols:
        sql += " GROUP BY " + ", ".join(cols) + " ORDER BY " + ", ".join(cols)
    return sql
