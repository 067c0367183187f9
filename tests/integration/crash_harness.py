"""The crash battery: SIGKILL a gateway at random moments under load, then check the books.

Shared by the fast test (``test_crash.py``: a handful of kills) and the long run
(``bench/crash.py``: fifty and more, printing its figures). Each round starts load on one gateway
(plain answers and streams, a few calls that fail upstream and are retried, latencies spread so
that calls are in flight at every moment), kills it with SIGKILL at a random instant, and
restarts it on the same data directory, which reconciles what the dead process left in flight.
A last round stops it with SIGTERM instead, with slow streams in flight: they must all finish.

Every request carries a unique ``user``, which the fake upstream counts, so the books can be
checked three ways: every answer a client received whole is in the ledger exactly once (by its
``x-request-id``); every call the upstream saw has a row (its attempts, or an ``interrupted``
row); no request has two call rows.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.gateway import GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

CALL = "status <> 'attempt_failed'"


@dataclass
class Figures:
    kills: int = 0
    sent: int = 0
    completed: int = 0  # answers a client received whole (any status)
    completed_missing: int = 0  # ... with no call row
    duplicates: int = 0  # requests with more than one call row
    upstream_calls: int = 0  # calls (distinct requests) the upstream saw
    upstream_unaccounted: int = 0  # ... with no row at all
    attempts_unaccounted: int = 0  # upstream attempts of a call recorded with fewer attempt rows
    interrupted: int = 0  # calls recorded at restart as interrupted
    attempt_rows: int = 0
    sigterm_in_flight: int = 0
    sigterm_finished: int = 0  # ... that the client received whole
    sigterm_exit: int | None = None
    journals_left: int = 0
    holds_left: int = 0  # Redis reservations still held at the end (PostgreSQL + Redis)
    # Redis `spent` minus what the ledger holds (PostgreSQL + Redis): never below 0; above 0 by
    # the cost of a call killed after its settlement reached Redis and before its end was
    # journaled (settled again at the restart: budgets err toward refusing)
    spent_gap_nano: int = 0
    restart_s: list[float] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return (
            self.completed_missing == 0
            and self.duplicates == 0
            and self.upstream_unaccounted == 0
            and self.attempts_unaccounted == 0
            and self.sigterm_finished == self.sigterm_in_flight
            and self.sigterm_exit == 0
            and self.journals_left == 0
            and self.holds_left == 0
            and self.spent_gap_nano >= 0
        )


KEY = "sk-crash-" + "c" * 20


def crash_gateway(
    upstream: UpstreamProcess, workdir: Path, store: str | None = None, redis: str | None = None
) -> tuple[str, GatewayProcess]:
    tenant = "crash" + uuid.uuid4().hex[:8]
    overrides: dict[str, Any] = {}
    if store:
        overrides["store"] = store
    if redis:
        overrides["redis"] = redis
    config = fake_upstream_config(upstream.url, **overrides)
    config["providers"][0]["retry_backoff_s"] = 0.05
    config["tenants"].append(
        {"name": tenant, "keys": ["env:CRASH_KEY"], "budgets": [{"usd": 1000, "period": "month"}]}
    )
    return tenant, GatewayProcess(workdir, config, env={"CRASH_KEY": KEY})


def body_for(tag: str, rng: random.Random) -> dict[str, Any]:
    stream = rng.random() < 0.5
    directives = f"#latency:{rng.randint(0, 400)}"
    if stream:
        directives += f" #words:{rng.randint(3, 12)} #chunk_delay:{rng.randint(5, 40)}"
    if rng.random() < 0.05:
        directives += " #status:503"  # every attempt fails: retried, then an error answer
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "max_tokens": 64,
        "user": tag,
        "stream": stream,
        "messages": [{"role": "user", "content": f"crash test {directives}"}],
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def one(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], done: dict[str, str]
) -> None:
    """One request; its request id lands in ``done`` only if the answer arrived whole."""
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
            payload = await r.read()
            rid = r.headers.get("x-request-id", "")
    except (TimeoutError, aiohttp.ClientError, OSError):
        return
    if body["stream"] and r.status == 200 and not payload.endswith(b"data: [DONE]\n\n"):
        return  # cut by the kill: not received whole
    done[body["user"]] = rid


async def load_until(
    url: str, tags: list[str], stop: asyncio.Event, rng: random.Random, concurrency: int
) -> dict[str, str]:
    """Requests from ``concurrency`` workers until ``stop``; tag -> request id of whole answers."""
    done: dict[str, str] = {}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def worker() -> None:
            while not stop.is_set():
                tag = f"{uuid.uuid4().hex}"
                tags.append(tag)
                await one(session, url, body_for(tag, rng), done)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def kill_round(
    gw: GatewayProcess,
    rng: random.Random,
    concurrency: int,
    tags: list[str],
    window_s: tuple[float, float],
) -> dict[str, str]:
    stop = asyncio.Event()
    load = asyncio.create_task(load_until(gw.url, tags, stop, rng, concurrency))
    await asyncio.sleep(rng.uniform(*window_s))
    await asyncio.to_thread(gw.kill)
    stop.set()
    done = await load
    await asyncio.to_thread(gw.stop)  # the harness's files of the dead process
    return done


async def sigterm_round(gw: GatewayProcess, figures: Figures, tags: list[str]) -> dict[str, str]:
    """Slow streams in flight, then SIGTERM: each must finish, the writer drain, exit 0."""
    rng = random.Random(0)
    done: dict[str, str] = {}
    n = 10
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        bodies = []
        for _ in range(n):
            tag = uuid.uuid4().hex
            tags.append(tag)
            b = body_for(tag, rng)
            b["stream"] = True
            b["stream_options"] = {"include_usage": True}
            b["messages"][0]["content"] = "sigterm #words:20 #chunk_delay:60"
            bodies.append(b)
        calls = [asyncio.create_task(one(session, gw.url, b, done)) for b in bodies]
        await asyncio.sleep(0.4)  # every stream has started
        assert gw.process is not None
        gw.process.terminate()
        await asyncio.gather(*calls)
        figures.sigterm_exit = await asyncio.to_thread(gw.process.wait, 30)
    figures.sigterm_in_flight = n
    figures.sigterm_finished = len(done)
    gw.stop()
    return done


def sqlite_rows(gw: GatewayProcess, tenant: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(gw.workdir / "passerelle-data" / "ledger.db")) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM usage WHERE tenant = ?", (tenant,))]


async def postgres_rows(url: str, tenant: str) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch("SELECT * FROM usage WHERE tenant = $1", tenant)]
    finally:
        await conn.close()


def redis_budget(url: str, tenant: str) -> tuple[int, int]:
    """(reservations still held, nano-dollars spent) of the tenant's budget counters."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        holds = client.keys(f"passerelle:budget:tenant:{tenant}:*:holds")
        spent = [k for k in client.keys(f"passerelle:budget:tenant:{tenant}:*") if k not in holds]
        return (
            sum(int(client.zcard(k)) for k in holds),
            sum(int(client.hget(k, "spent") or 0) for k in spent),
        )
    finally:
        client.close()


def check(
    figures: Figures,
    rows: list[dict[str, Any]],
    completed: dict[str, str],
    upstream_users: dict[str, int],
    tags: set[str],
) -> None:
    calls = Counter(r["request_id"] for r in rows if r["status"] != "attempt_failed")
    by_user: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_user.setdefault(r["end_user"], []).append(r)
    figures.completed = len(completed)
    figures.completed_missing = sum(1 for rid in completed.values() if calls[rid] != 1)
    figures.duplicates = sum(1 for n in calls.values() if n > 1) + sum(
        1
        for user_rows in by_user.values()
        if sum(1 for r in user_rows if r["status"] != "attempt_failed") > 1
    )
    seen = {u: n for u, n in upstream_users.items() if u in tags}
    figures.upstream_calls = len(seen)
    figures.upstream_unaccounted = sum(1 for u in seen if u not in by_user)
    figures.attempts_unaccounted = sum(
        1
        for u, n in seen.items()
        if u in by_user
        and not any(r["status"] == "interrupted" for r in by_user[u])
        and sum(1 for r in by_user[u] if r["attempt"] >= 1) < n
    )
    figures.interrupted = sum(1 for r in rows if r["status"] == "interrupted")
    figures.attempt_rows = sum(1 for r in rows if r["status"] == "attempt_failed")


async def run(
    upstream: UpstreamProcess,
    workdir: Path,
    kills: int,
    *,
    store: str | None = None,
    redis: str | None = None,
    concurrency: int = 30,
    seed: int = 1,
    window_s: tuple[float, float] = (0.3, 1.2),
) -> Figures:
    """``kills`` SIGKILL rounds and a SIGTERM round on one gateway; the figures of the books.
    Each kill lands at a random instant of ``window_s`` after its round's load began."""
    rng = random.Random(seed)
    tenant, gw = crash_gateway(upstream, workdir, store, redis)
    figures = Figures()
    tags: list[str] = []
    completed: dict[str, str] = {}
    await asyncio.to_thread(gw.start)
    try:
        for _ in range(kills):
            completed.update(await kill_round(gw, rng, concurrency, tags, window_s))
            figures.kills += 1
            t0 = time.monotonic()
            await asyncio.to_thread(gw.start)  # reconciles the dead process's journal
            figures.restart_s.append(time.monotonic() - t0)
        completed.update(await sigterm_round(gw, figures, tags))
    finally:
        gw.stop()
    figures.sent = len(tags)
    await asyncio.sleep(1.0)  # calls the upstream was still sleeping on have been counted
    rows = await postgres_rows(store, tenant) if store else sqlite_rows(gw, tenant)
    check(figures, rows, completed, upstream.stats()["users"], set(tags))
    figures.journals_left = len(list((workdir / "passerelle-data").glob("journal-*.jsonl")))
    if redis:
        figures.holds_left, spent = redis_budget(redis, tenant)
        ledger_nano = sum(-(-int(r["cost_pusd"] or 0) // 1000) for r in rows)
        figures.spent_gap_nano = spent - ledger_nano
    return figures
