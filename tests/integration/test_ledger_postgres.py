"""The ledger on PostgreSQL (and Redis) under what breaks it: hostile text, terminated backends,
a replica killed with calls in flight.

Each test runs its own gateway on the test database, with a tenant of its own, and reads the rows
back with asyncpg. Backends are terminated only on this test database, and only the gateway's
(``application_name = 'passerelle'``).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from tests.fakes.gateway import GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess
from tests.integration.budget_helpers import race
from tests.integration.test_durability import BUDGET_BODY, post, send_and_kill


def pg_rows(url: str, where: str, *args: Any) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                f"SELECT * FROM usage WHERE {where} ORDER BY ts, attempt", *args
            )
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    return asyncio.run(fetch())


@pytest.fixture
def tenant_gateway(tmp_path: Path, fresh_upstream: UpstreamProcess, postgres_url: str):  # type: ignore[no-untyped-def]
    """start(**overrides) -> (tenant, gateway) on PostgreSQL, the tenant's key in RACE_KEY."""
    started: list[GatewayProcess] = []

    def start(tenant_extra: dict[str, Any] | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
        tenant = "t" + uuid.uuid4().hex[:10]
        config = fake_upstream_config(fresh_upstream.url, store=postgres_url, **overrides)
        config["tenants"].append(
            {"name": tenant, "keys": ["env:BUDGET_KEY"], **(tenant_extra or {})}
        )
        from tests.integration.test_durability import BUDGET_KEY

        gw = GatewayProcess(tmp_path / f"gw{len(started)}", config, env={"BUDGET_KEY": BUDGET_KEY})
        gw.start()
        started.append(gw)
        return tenant, gw

    yield start
    for gw in started:
        gw.stop()


def test_nul_in_a_text_field_is_refused_before_the_upstream_and_recorded(
    tenant_gateway, postgres_url, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL TEXT refuses NUL: a NUL in ``user`` is refused at parse (400, naming the field),
    before the provider is paid or anything is metered; nothing was served, so nothing is owed to
    the ledger. (The ledger makes any text storable too: tests/unit/test_ledger.py.)"""
    tenant, gw = tenant_gateway()
    body = {**BUDGET_BODY, "user": "bob\x00evil"}
    status, payload = post(gw, body)
    assert status == 400, payload
    assert b'"param":"user"' in payload
    assert fresh_upstream.stats()["requests"] == 0
    assert pg_rows(postgres_url, "tenant = $1", tenant) == []
    assert not (gw.workdir / "passerelle-data" / "ledger-dead-letters.jsonl").exists()


def terminating(url: str, stop: threading.Event, counted: list[int]) -> None:
    """Terminates the gateway's backends on this database every 20 ms until ``stop``."""

    async def loop() -> None:
        conn = await asyncpg.connect(url)
        try:
            while not stop.is_set():
                counted[0] += await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'passerelle' "
                    "AND pid <> pg_backend_pid()"
                )
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    asyncio.run(loop())


def test_terminated_backends_under_load_lose_no_served_call(tenant_gateway, postgres_url) -> None:  # type: ignore[no-untyped-def]
    """A batch whose connection dies is retried on a new one while its callers wait: every call
    is answered and recorded, none is a dead letter."""
    from tests.integration.test_durability import BUDGET_KEY

    tenant, gw = tenant_gateway()
    stop, killed = threading.Event(), [0]
    killer = threading.Thread(target=terminating, args=(postgres_url, stop, killed))
    killer.start()
    try:
        results = asyncio.run(race([gw.url], BUDGET_KEY, 600, body=BUDGET_BODY))
    finally:
        stop.set()
        killer.join()
    statuses = [s for s, _ in results]
    assert killed[0] > 0
    assert statuses.count(200) == len(results), [b for s, b in results if s != 200][:3]
    rows = pg_rows(postgres_url, "tenant = $1", tenant)
    assert len(rows) == len(results) == len({r["request_id"] for r in rows})
    assert not (gw.workdir / "passerelle-data" / "ledger-dead-letters.jsonl").exists()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_a_replica_killed_in_flight_records_and_releases_its_calls_at_restart(  # type: ignore[no-untyped-def]
    tenant_gateway, postgres_url, redis_url, redis_db, fresh_upstream
) -> None:
    """On PostgreSQL + Redis, the dead replica's calls are recorded as interrupted and its holds
    move into the budget's spend at once, instead of waiting out their expiry."""
    tenant, gw = tenant_gateway({"budgets": [{"usd": 1, "period": "month"}]}, redis=redis_url)
    status, _ = post(gw, {**BUDGET_BODY, "user": "done"})
    assert status == 200
    n = 5
    send_and_kill(gw, fresh_upstream, n)
    [counter] = [
        k
        for k in redis_db.keys(f"passerelle:budget:tenant:{tenant}:*")
        if not k.endswith(b":holds")
    ]
    assert redis_db.zcard(counter + b":holds") == n  # held by the dead replica
    gw.start()
    rows = pg_rows(postgres_url, "tenant = $1", tenant)
    assert sorted(r["status"] for r in rows) == ["interrupted"] * n + ["ok"]
    assert redis_db.zcard(counter + b":holds") == 0
    assert int(redis_db.hget(counter, "reserved") or 0) == 0
    spent_nano = int(redis_db.hget(counter, "spent") or 0)
    assert spent_nano * 1000 == sum(r["cost_pusd"] for r in rows)
