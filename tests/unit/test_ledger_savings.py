"""What a call saved, in the ledger: recorded, migrated onto older ledgers, and reported.

Runs against SQLite and PostgreSQL like the rest of the ledger suite (``test_ledger.py``, whose
fixtures it uses): the same records must give the same savings report on both engines.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from passerelle.store.base import Ledger
from passerelle.store.postgres import PostgresLedger
from passerelle.store.records import CacheOutcome, SavingSource, Status
from passerelle.store.sqlite import SQLiteLedger
from tests.unit.test_ledger import DAY1, DAY2, ledger, stores, usage_record  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="function")

# the usage table as the releases before savings made it
OLD_USAGE_TABLE = """
CREATE TABLE usage (
    request_id TEXT NOT NULL, attempt INTEGER NOT NULL, ts DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL, tenant TEXT, key_id TEXT, feature TEXT, end_user TEXT,
    endpoint TEXT NOT NULL, model TEXT, provider TEXT, upstream_model TEXT,
    input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL,
    usage_reported INTEGER NOT NULL, cost_pusd BIGINT, price_version TEXT,
    latency_ms DOUBLE PRECISION NOT NULL, ttft_ms DOUBLE PRECISION, status TEXT NOT NULL,
    error_code TEXT, stream INTEGER NOT NULL, decision TEXT, PRIMARY KEY (request_id, attempt)
)
"""
OLD_ROW = (
    "INSERT INTO usage VALUES ('old', 0, 1772366400.0, '2026-03-01', 'acme', NULL, NULL, NULL, "
    "'chat.completions', 'gpt-4o-mini', 'fake', 'gpt-4o-mini', 10, 20, 0, 1, 5000000, NULL, "
    "1.0, NULL, 'ok', NULL, 0, NULL)"
)


def hit(rid: str, saved: str, **kw: object) -> object:
    """A call answered from the exact cache: it paid nothing and saved ``saved``."""
    return usage_record(
        rid,
        provider=None,
        upstream_model=None,
        input_tokens=0,
        output_tokens=0,
        cached_tokens=0,
        cost_usd=Decimal(0),
        saved_usd=Decimal(saved),
        saving_source=SavingSource.CACHE_EXACT,
        cache=CacheOutcome.HIT,
        **kw,
    )


async def test_what_a_call_saved_reads_back_exactly(ledger: Ledger) -> None:  # noqa: F811
    rec = hit("h1", "0.000123456789")
    await ledger.record(rec)  # type: ignore[arg-type]
    [got] = await ledger.records("h1")
    assert got == rec
    assert got.saved_usd == Decimal("0.000123456789") and got.cache == "hit"
    await ledger.record(usage_record("plain"))
    [plain] = await ledger.records("plain")
    assert plain.saved_usd == 0 and plain.saving_source is None and plain.cache is None


async def test_savings_report_hits_paid_saved_and_the_cost_without_savings(
    ledger: Ledger,  # noqa: F811
) -> None:
    miss = {"cache": CacheOutcome.MISS}
    for rec in [
        usage_record("m1", cost_usd=Decimal("0.01"), **miss),
        hit("h1", "0.01"),
        hit("h2", "0.01", ts=DAY2),
        usage_record("b1", cost_usd=Decimal("0.02"), cache=CacheOutcome.BYPASS),
        usage_record("r1", cost_usd=Decimal("0.03"), cache=CacheOutcome.REFRESH),
        # a failed attempt is not a request, and a cheaper route is another source of savings
        usage_record("m2", attempt=0, status=Status.ATTEMPT_FAILED, cost_usd=Decimal(0)),
        usage_record("m2", attempt=1, cost_usd=Decimal("0.004"), **miss),
        usage_record(
            "x1", cost_usd=Decimal("0.001"), saved_usd=Decimal("0.009"), saving_source="route"
        ),
        hit("g1", "0.5", tenant="globex", feature="search"),
    ]:
        await ledger.record(rec)  # type: ignore[arg-type]
    rows = await ledger.savings(["tenant"])
    assert [r.group for r in rows] == [{"tenant": "acme"}, {"tenant": "globex"}]
    acme = rows[0]
    assert (acme.requests, acme.lookups, acme.hits) == (7, 4, 2)
    assert acme.hit_rate == 0.5  # hits over hits and misses: a bypass or a refresh is neither
    assert acme.cost_usd == Decimal("0.065")
    assert acme.saved_usd == Decimal("0.029")
    assert acme.cost_without_savings_usd == Decimal("0.094")
    assert acme.saved_by_source == {
        "cache_exact": Decimal("0.02"),
        "route": Decimal("0.009"),
        "none": Decimal(0),
    }
    doc = acme.as_json()
    assert doc["saved_usd"] == "0.029000000000"
    assert doc["by_source"]["cache_exact"] == {"requests": 2, "saved_usd": "0.020000000000"}

    by_day = await ledger.savings(["tenant", "feature", "day"])
    assert [(r.group["day"], r.hits) for r in by_day if r.group["tenant"] == "acme"] == [
        ("2026-03-01", 1),
        ("2026-03-02", 1),
    ]
    [month] = await ledger.savings(["month"])
    assert month.group == {"month": "2026-03"} and month.requests == 8
    assert await ledger.savings([], until=datetime(2000, 1, 1, tzinfo=UTC)) == []


async def _old_sqlite(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(OLD_USAGE_TABLE)
        conn.execute(OLD_ROW)
        conn.commit()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_a_ledger_made_before_savings_is_migrated_at_start(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if engine == "sqlite":
        path = tmp_path / "old.db"
        await _old_sqlite(path)

        def make() -> Ledger:
            return SQLiteLedger(str(path))
    else:
        url = request.getfixturevalue("postgres_url")
        schema = f"test_old_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(url)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path = "{schema}"')
        await conn.execute(OLD_USAGE_TABLE)
        await conn.execute(OLD_ROW)
        await conn.close()
        request.addfinalizer(lambda: _drop(url, schema))

        def make() -> Ledger:
            return PostgresLedger(url, schema=schema)

    for _ in range(2):  # the second start finds every column there
        store = make()
        await store.start()
        try:
            [old] = await store.records("old")
            assert old.cost_usd == Decimal("0.000005") and old.saved_usd == 0
            assert old.saving_source is None and old.cache is None
            await store.record(hit(f"new-{uuid.uuid4().hex}", "0.25"))  # type: ignore[arg-type]
        finally:
            await store.close()
    store = make()
    await store.start()
    try:
        [row] = await store.savings(["tenant"])
    finally:
        await store.close()
    assert (row.requests, row.hits, row.saved_usd) == (3, 2, Decimal("0.5"))


def _drop(url: str, schema: str) -> None:
    import asyncio

    async def drop() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())
