"""One ledger suite, run against every store: SQLite (embedded) and PostgreSQL (scale-out).

Each test gets an empty ledger: SQLite in a temporary directory, PostgreSQL in a schema of its
own that is dropped afterwards. Where PostgreSQL is down its half is skipped (loudly; a failure
under ``CI=true``), see ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from passerelle.errors import StoreError
from passerelle.store.base import Ledger
from passerelle.store.postgres import PostgresLedger
from passerelle.store.records import Status, UsageRecord
from passerelle.store.sqlite import SQLiteLedger
from passerelle.tenancy import ApiKey

pytestmark = pytest.mark.asyncio(loop_scope="function")

DAY1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp()
WRITER_TIMEOUT_S = 10  # a writer that died shows as a hang: turn it into a failure
DEAD_LETTERS = "dead-letters.jsonl"
TEXT_FIELDS = (
    "request_id",
    "tenant",
    "key_id",
    "feature",
    "end_user",
    "endpoint",
    "model",
    "provider",
    "upstream_model",
    "price_version",
    "error_code",
    "decision",
)


def usage_record(request_id: str = "req_1", **changes: Any) -> UsageRecord:
    base = UsageRecord(
        request_id=request_id,
        attempt=0,
        ts=DAY1,
        tenant="acme",
        key_id="key_abc",
        feature="chat",
        end_user="u1",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        provider="openai",
        upstream_model="gpt-4o-mini-2024-07-18",
        input_tokens=1000,
        output_tokens=500,
        cached_tokens=200,
        usage_reported=True,
        cost_usd=Decimal("0.000435"),
        price_version="2026-01",
        latency_ms=123.25,
        ttft_ms=45.5,
        status="ok",
        error_code=None,
        stream=False,
    )
    return dataclasses.replace(base, **changes)


class Stores:
    """Opens ledgers on one test's storage, and closes those the test left open."""

    def __init__(self, open_one: Callable[[], Ledger]) -> None:
        self._open_one = open_one
        self._opened: list[Ledger] = []

    async def open(self) -> Ledger:
        ledger = self._open_one()
        await ledger.start()
        self._opened.append(ledger)
        return ledger

    async def close_all(self) -> None:
        for ledger in self._opened:
            await ledger.close()


@pytest_asyncio.fixture(params=["sqlite", "postgres"], loop_scope="function")
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "sqlite":
        path = str(tmp_path / "ledger.db")
        s = Stores(lambda: SQLiteLedger(path, dead_letters=tmp_path / DEAD_LETTERS))
        yield s
        await s.close_all()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"test_ledger_{uuid.uuid4().hex[:12]}"
    s = Stores(lambda: PostgresLedger(url, schema=schema, dead_letters=tmp_path / DEAD_LETTERS))
    try:
        yield s
    finally:
        await s.close_all()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest_asyncio.fixture(loop_scope="function")
async def ledger(stores: Stores) -> Ledger:
    return await stores.open()


def commits(ledger: Ledger) -> int:
    assert isinstance(ledger, SQLiteLedger | PostgresLedger)
    return ledger.commits


async def total_requests(ledger: Ledger) -> int:
    return sum(row.requests for row in await ledger.usage([]))


# records ---------------------------------------------------------------------------------------
async def test_a_record_reads_back_exactly(ledger: Ledger) -> None:
    first = usage_record(cost_usd=Decimal("0.123456789012"))
    retry = usage_record(
        attempt=1,
        ts=DAY1 + 0.000123,
        stream=True,
        usage_reported=False,
        ttft_ms=None,
        status="upstream_cut",
        error_code="eof",
        cost_usd=None,
        feature=None,
        end_user=None,
        key_id=None,
    )
    await ledger.record(retry)
    await ledger.record(first)
    assert await ledger.records("req_1") == [first, retry]
    got = (await ledger.records("req_1"))[0]
    assert type(got.ts) is float and type(got.input_tokens) is int
    assert got.usage_reported is True and got.stream is False
    assert await ledger.records("req_unknown") == []


async def test_cost_is_stored_to_the_pico_dollar_rounding_half_up(ledger: Ledger) -> None:
    await ledger.record(usage_record("a", cost_usd=Decimal("0.0000000000005")))  # half: up
    await ledger.record(usage_record("b", cost_usd=Decimal("0.1234567890124")))  # below: down
    assert (await ledger.records("a"))[0].cost_usd == Decimal("1E-12")
    assert (await ledger.records("b"))[0].cost_usd == Decimal("0.123456789012")
    [row] = await ledger.usage(["tenant"])
    assert row.cost_usd == Decimal("0.123456789013")


async def test_the_same_attempt_recorded_twice_is_stored_once(ledger: Ledger) -> None:
    rec = usage_record()
    await ledger.record(rec)
    await ledger.record(rec)  # a retried write, later
    await asyncio.gather(*(ledger.record(rec) for _ in range(5)))  # and inside one batch
    await ledger.record(dataclasses.replace(rec, attempt=1))  # another attempt is another row
    assert [r.attempt for r in await ledger.records("req_1")] == [0, 1]
    assert await total_requests(ledger) == 2


async def test_a_record_before_start_or_after_close_is_refused(stores: Stores) -> None:
    ledger = await stores.open()
    await ledger.close()
    with pytest.raises(StoreError, match="not started"):
        await ledger.record(usage_record())


# usage reports ---------------------------------------------------------------------------------
async def test_usage_sums_are_exact_decimals(ledger: Ledger) -> None:
    costs = ["0.1", "0.2", "0.000000000001"]  # 0.1 + 0.2 != 0.3 in floats
    for i, cost in enumerate(costs):
        await ledger.record(usage_record(f"r{i}", cost_usd=Decimal(cost), input_tokens=10**12))
    [row] = await ledger.usage(["tenant"])
    assert row.cost_usd == Decimal("0.300000000001")
    assert isinstance(row.cost_usd, Decimal)
    assert (row.requests, row.input_tokens, row.output_tokens, row.cached_tokens) == (
        3,
        3 * 10**12,
        1500,
        600,
    )
    assert all(type(v) is int for v in (row.requests, row.input_tokens, row.unpriced_requests))
    # the report carries every pico-dollar the ledger holds: no rounding on the way out
    assert row.as_json()["cost_usd"] == "0.300000000001"


async def test_usage_groups_by_tenant_feature_model_and_day(ledger: Ledger) -> None:
    plan = [
        ("1", "acme", "chat", "gpt-4o-mini", DAY1, "0.01"),
        ("2", "acme", "chat", "gpt-4o-mini", DAY1, "0.02"),
        ("3", "acme", "chat", "gpt-4o-mini", DAY2, "0.04"),
        ("4", "acme", None, "gpt-4o-mini", DAY1, "0.08"),
        ("5", "acme", "chat", "claude-haiku", DAY1, "0.16"),
        ("6", "globex", "search", "gpt-4o-mini", DAY2, "0.32"),
    ]
    for rid, tenant, feature, model, ts, cost in plan:
        await ledger.record(
            usage_record(
                rid, tenant=tenant, feature=feature, model=model, ts=ts, cost_usd=Decimal(cost)
            )
        )
    rows = await ledger.usage(["tenant", "feature", "model", "day"])
    got = [(r.group, r.requests, r.cost_usd) for r in rows]
    g = ("tenant", "feature", "model", "day")
    assert got == [  # the same order on every engine: NULL first, then by code point
        (
            dict(zip(g, ("acme", None, "gpt-4o-mini", "2026-03-01"), strict=True)),
            1,
            Decimal("0.08"),
        ),
        (
            dict(zip(g, ("acme", "chat", "claude-haiku", "2026-03-01"), strict=True)),
            1,
            Decimal("0.16"),
        ),
        (
            dict(zip(g, ("acme", "chat", "gpt-4o-mini", "2026-03-01"), strict=True)),
            2,
            Decimal("0.03"),
        ),
        (
            dict(zip(g, ("acme", "chat", "gpt-4o-mini", "2026-03-02"), strict=True)),
            1,
            Decimal("0.04"),
        ),
        (
            dict(zip(g, ("globex", "search", "gpt-4o-mini", "2026-03-02"), strict=True)),
            1,
            Decimal("0.32"),
        ),
    ]
    by_tenant = {r.group["tenant"]: r.cost_usd for r in await ledger.usage(["tenant"])}
    assert by_tenant == {"acme": Decimal("0.31"), "globex": Decimal("0.32")}
    by_day = {r.group["day"]: r.requests for r in await ledger.usage(["day"])}
    assert by_day == {"2026-03-01": 4, "2026-03-02": 2}


async def test_unpriced_records_are_counted_never_charged_zero(ledger: Ledger) -> None:
    await ledger.record(usage_record("priced", cost_usd=Decimal("0.5")))
    await ledger.record(usage_record("unpriced", cost_usd=None, model="mystery-model"))
    await ledger.record(
        usage_record("failed", cost_usd=None, status="error", error_code="upstream_error")
    )
    [row] = await ledger.usage(["tenant"])
    assert (row.requests, row.unpriced_requests, row.errors) == (3, 1, 1)
    assert row.cost_usd == Decimal("0.5")
    [mystery] = [r for r in await ledger.usage(["model"]) if r.group["model"] == "mystery-model"]
    assert (mystery.unpriced_requests, mystery.cost_usd) == (1, 0)
    assert (await ledger.records("unpriced"))[0].cost_usd is None


async def test_usage_since_is_inclusive_and_until_exclusive(ledger: Ledger) -> None:
    for rid, ts in (("early", DAY1 - 1), ("at", DAY1), ("mid", DAY1 + 60), ("late", DAY2)):
        await ledger.record(usage_record(rid, ts=ts))
    since = datetime.fromtimestamp(DAY1, UTC)
    until = datetime.fromtimestamp(DAY2, UTC)
    assert await total_requests(ledger) == 4

    async def count(**window: datetime) -> int:
        return sum(r.requests for r in await ledger.usage(["tenant"], **window))

    assert await count(since=since) == 3
    assert await count(until=until) == 3
    assert await count(since=since, until=until) == 2
    assert await count(since=until, until=since) == 0


async def test_usage_of_an_empty_ledger_is_empty(ledger: Ledger) -> None:
    assert await ledger.usage([]) == []
    assert await ledger.usage(["tenant", "day"]) == []


async def test_usage_rejects_an_unknown_group(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="cost_pusd; DROP"):
        await ledger.usage(["cost_pusd; DROP TABLE usage"])


# the writer: batches, bad rows, cancellation, shutdown -----------------------------------------
async def test_concurrent_records_are_all_durable_in_fewer_commits(stores: Stores) -> None:
    ledger = await stores.open()
    before = commits(ledger)
    async with asyncio.timeout(WRITER_TIMEOUT_S):
        await asyncio.gather(*(ledger.record(usage_record(f"r{i}")) for i in range(500)))
    assert 0 < commits(ledger) - before < 500
    other = await stores.open()  # another connection, as another replica would see it
    assert await total_requests(other) == 500
    assert len(await other.records("r499")) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"endpoint": None},  # NOT NULL violated in the database
        {"input_tokens": 2**70},  # out of range before it reaches the database
    ],
    ids=["not-null", "out-of-range"],
)
async def test_a_bad_row_does_not_drop_its_neighbours(ledger: Ledger, bad: dict[str, Any]) -> None:
    recs = [usage_record(f"r{i}") for i in range(20)]
    recs[10] = usage_record("bad", **bad)
    async with asyncio.timeout(WRITER_TIMEOUT_S):
        results = await asyncio.gather(*(ledger.record(r) for r in recs), return_exceptions=True)
    assert isinstance(results[10], StoreError)
    assert results[:10] + results[11:] == [None] * 19
    assert await total_requests(ledger) == 19
    assert await ledger.records("bad") == []
    [kept] = dead_letters(ledger)  # discarded, but kept and counted
    assert kept["request_id"] == "bad" and kept["error"]
    assert kept["tenant"] == "acme" and str(kept["input_tokens"]) == str(
        bad.get("input_tokens", 1000)
    )
    assert isinstance(ledger, SQLiteLedger | PostgresLedger) and ledger.dead_letters.count == 1
    async with asyncio.timeout(WRITER_TIMEOUT_S):
        await ledger.record(usage_record("after"))  # the writer lives on
    assert await total_requests(ledger) == 20


async def test_a_cancelled_caller_still_gets_its_row_and_the_writer_lives_on(
    ledger: Ledger,
) -> None:
    task = asyncio.create_task(ledger.record(usage_record("gone")))
    await asyncio.sleep(0)  # queued, waiting for its commit
    task.cancel()  # the client went away
    async with asyncio.timeout(WRITER_TIMEOUT_S):
        await ledger.record(usage_record("next"))
    assert len(await ledger.records("gone")) == 1
    assert len(await ledger.records("next")) == 1


async def test_close_drains_pending_records(stores: Stores) -> None:
    ledger = await stores.open()
    pending = [asyncio.create_task(ledger.record(usage_record(f"r{i}"))) for i in range(300)]
    await asyncio.sleep(0)  # every record is queued; none is committed yet
    async with asyncio.timeout(WRITER_TIMEOUT_S):
        await ledger.close()
    assert all(t.done() and t.exception() is None for t in pending)
    assert await total_requests(await stores.open()) == 300


def dead_letters(ledger: Ledger) -> list[dict[str, Any]]:
    assert isinstance(ledger, SQLiteLedger | PostgresLedger)
    path = ledger.dead_letters.path
    assert path is not None
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_what_a_client_typed_never_keeps_a_row_out(ledger: Ledger) -> None:
    """PostgreSQL TEXT refuses NUL, and neither store encodes a lone surrogate: every text field
    is made storable, identically on both stores, and the row is kept."""
    hostile = "a\x00b\ud800c\udfffé"
    rec = usage_record(**{f: f"{f}:{hostile}" for f in TEXT_FIELDS})
    async with asyncio.timeout(WRITER_TIMEOUT_S):
        await ledger.record(rec)
    kept = "a\ufffdb\ufffdc\ufffdé"
    [got] = await ledger.records(f"request_id:{kept}")
    for f in TEXT_FIELDS:
        assert getattr(got, f) == f"{f}:{kept}", f
    assert await total_requests(ledger) == 1
    assert dead_letters(ledger) == []


async def test_usage_counts_calls_not_their_failed_attempts(ledger: Ledger) -> None:
    """A timed-out attempt is a row of its own (the upstream may bill it), never a request."""
    for i in (1, 2):
        await ledger.record(
            usage_record(
                "r1",
                attempt=i,
                status=Status.ATTEMPT_FAILED,
                error_code="upstream_timeout",
                input_tokens=0,
                output_tokens=0,
                cached_tokens=0,
                cost_usd=Decimal(0),
                usage_reported=False,
            )
        )
    await ledger.record(usage_record("r1", attempt=3))
    await ledger.record(usage_record("r2", attempt=1, status="error", error_code="x"))
    [row] = await ledger.usage(["tenant"])
    assert (row.requests, row.errors, row.input_tokens) == (2, 1, 2000)
    assert [r.status for r in await ledger.records("r1")] == [Status.ATTEMPT_FAILED] * 2 + [
        Status.OK
    ]


# keys ------------------------------------------------------------------------------------------
async def test_keys_are_created_found_and_listed(ledger: Ledger) -> None:
    a1 = ApiKey(key_id="key_a1", tenant="acme", digest="d" * 64, name="ci")
    a2 = ApiKey(key_id="key_a2", tenant="acme", digest="e" * 64)
    g1 = ApiKey(key_id="key_g1", tenant="globex", digest="f" * 64, name="prod")
    for key in (a1, a2, g1):
        await ledger.create_key(key)
    assert await ledger.find_key("e" * 64) == a2
    assert await ledger.find_key("0" * 64) is None
    assert await ledger.find_key("' OR '1'='1") is None
    assert await ledger.list_keys() == [a1, a2, g1]
    assert await ledger.list_keys("acme") == [a1, a2]
    assert await ledger.list_keys("nobody") == []


async def test_a_duplicate_key_digest_is_a_store_error(ledger: Ledger) -> None:
    key = ApiKey(key_id="key_a1", tenant="acme", digest="d" * 64)
    await ledger.create_key(key)
    with pytest.raises(StoreError):
        await ledger.create_key(dataclasses.replace(key, tenant="globex"))
    assert await ledger.list_keys() == [key]


# PostgreSQL only -------------------------------------------------------------------------------
async def test_an_unreachable_postgres_is_a_clear_store_error() -> None:
    ledger = PostgresLedger("postgresql://ledger:s3cret@127.0.0.1:1/nowhere")
    with pytest.raises(
        StoreError,
        match=r"cannot open the PostgreSQL ledger at "
        r"postgresql://ledger:\*\*\*@127\.0\.0\.1:1/nowhere",
    ) as e:
        await ledger.start()
    assert "s3cret" not in str(e.value)
    with pytest.raises(StoreError, match="not started"):
        await ledger.record(usage_record())


async def test_terminated_backends_lose_no_row_and_discard_none(stores: Stores) -> None:
    """pg_terminate_backend on the writer's connections under concurrent load: each failed batch
    is retried on a new connection; no row is missing, none is a dead letter, none doubled."""
    ledger = await stores.open()
    if not isinstance(ledger, PostgresLedger):
        pytest.skip("PostgreSQL only")
    admin = await asyncpg.connect(ledger.url)
    n, killed = 3000, 0

    async def records() -> None:
        await asyncio.gather(*(ledger.record(usage_record(f"r{i}")) for i in range(n)))

    async def terminate() -> None:
        nonlocal killed
        for _ in range(30):  # a terminated backend every 20 ms while the writes go on
            if writing.done():
                break
            killed += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'passerelle' "
                "AND pid <> pg_backend_pid()"
            )
            await asyncio.sleep(0.02)

    try:
        async with asyncio.timeout(60):
            writing = asyncio.ensure_future(records())
            await asyncio.gather(writing, terminate())
    finally:
        await admin.close()
    assert killed > 0 and ledger.retries > 0
    assert await total_requests(ledger) == n
    assert dead_letters(ledger) == []
    assert ledger.healthy


async def test_a_schema_name_must_be_a_plain_identifier() -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresLedger("postgresql://127.0.0.1/test", schema='x"; DROP SCHEMA public; --')
