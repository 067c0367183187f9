"""Redis fails under money in flight: cut between admission and settlement, flushed, restarted empty.

Each test drives a real gateway in front of the fake upstream, with its own ``redis-server`` (so a
flush or a restart touches nobody else), sometimes behind a ``TcpProxy`` that the test cuts. What
must hold: every request is refused (429, or 503 while the state is rebuilt) or served and
recorded; the hard budget is never passed by more than one request's worst case; an
``Idempotency-Key`` reaches the upstream once; and once Redis is back and the calls are over,
Redis' ``spent`` equals the ledger to the nano-dollar, with nothing left reserved.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.fakes.gateway import GatewayProcess
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.upstream import UpstreamProcess
from tests.integration.budget_helpers import budget_config, race, spend
from tests.integration.test_fail_closed import PrivateRedis, private_redis  # noqa: F401

pytestmark = pytest.mark.redis

# 10 prompt tokens reported, 100 completion tokens = max_tokens: the real cost is $0.0000615,
# almost the worst case reserved (about 16 estimated prompt tokens + 100): a lost reservation
# shows as money handed out again
COST = Decimal("0.0000615")
WORST = (Decimal(16) * Decimal("0.15") + Decimal(100) * Decimal("0.60")) / Decimal(10**6)
NANO = Decimal(10**9)


def body(content: str = "") -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": f"hi #usage:10,100,0 {content}".strip()}],
    }


def books(r: redis.Redis, tenant: str) -> tuple[int, int]:
    """(spent, reserved) of the tenant's budget counter, in nano-dollars, as Redis holds them."""
    keys = [k for k in r.scan_iter(f"passerelle:budget:tenant:{tenant}:*") if b":holds" not in k]
    assert len(keys) == 1, keys
    spent, reserved = r.hmget(keys[0], "spent", "reserved")
    return int(spent or -1), int(reserved or 0)


def ledger_nano(gw: GatewayProcess, tenant: str) -> int:
    """The tenant's spend as the ledger holds it (pico-dollars), in nano-dollars."""
    rows = gw.ledger_rows("tenant = ?", (tenant,))
    return sum(r["cost_pusd"] or 0 for r in rows) // 1000


def settled_count(upstream: UpstreamProcess) -> int:
    """The upstream's request count once it has stopped moving (every admission is in)."""
    seen, since = -1, time.monotonic()
    while time.monotonic() - since < 0.4:
        now = upstream.stats()["requests"]
        if now != seen:
            seen, since = now, time.monotonic()
        time.sleep(0.02)
    return seen


def eventually(check: Callable[[], bool], within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def books_exact(r: redis.Redis, gw: GatewayProcess, tenant: str) -> Callable[[], bool]:
    return lambda: books(r, tenant) == (ledger_nano(gw, tenant), 0)


class Tenant:
    def __init__(self, tmp_path: Path, upstream: UpstreamProcess, redis_url: str, usd: str):
        self.name = "rf-" + uuid.uuid4().hex[:10]
        self.key = "sk-rf-" + uuid.uuid4().hex
        self.usd = Decimal(usd)
        self.config = budget_config(
            upstream.url,
            self.name,
            {"budgets": [{"usd": float(usd), "period": "month"}]},
            redis=redis_url,
        )
        self.workdir = tmp_path / "gw"

    def gateway(self) -> GatewayProcess:
        return GatewayProcess(self.workdir, self.config, env={"RACE_KEY": self.key})


class in_background:  # a function in use: called once, then awaited
    """Run ``fn`` in a thread; calling the result waits for it and gives its return value."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._out: list[Any] = []
        self._thread = threading.Thread(target=lambda: self._out.append(fn()), daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def __call__(self) -> Any:
        self._thread.join(timeout=60)
        assert self._out, "the background requests never finished"
        return self._out[0]


@pytest.fixture
def proxied_redis(private_redis: PrivateRedis) -> Iterator[TcpProxy]:  # noqa: F811
    with TcpProxy(("127.0.0.1", private_redis.port)) as proxy:
        yield proxy


# --- a settlement that cannot reach Redis ---------------------------------------------------------


def test_settlements_cut_off_from_redis_are_applied_once_it_is_back(
    tmp_path: Path,
    fresh_upstream: UpstreamProcess,
    private_redis: PrivateRedis,  # noqa: F811
    proxied_redis: TcpProxy,
) -> None:
    t = Tenant(tmp_path, fresh_upstream, f"redis://127.0.0.1:{proxied_redis.port}/0", "0.01")
    r = redis.Redis(port=private_redis.port)
    with t.gateway() as gw:
        assert asyncio.run(race([gw.url], t.key, 1, body()))[0][0] == 200
        # five calls admitted and at the upstream when Redis goes away; they finish without it
        slow = in_background(lambda: asyncio.run(race([gw.url], t.key, 5, body("#latency:700"))))
        assert eventually(lambda: fresh_upstream.stats()["requests"] == 6)
        proxied_redis.stop()
        assert [s for s, _ in slow()] == [200] * 5
        proxied_redis.start()
        assert eventually(books_exact(r, gw, t.name)), (books(r, t.name), ledger_nano(gw, t.name))
        assert ledger_nano(gw, t.name) == 6 * int(COST * NANO)


def test_a_replica_killed_with_settlements_pending_is_corrected_from_the_ledger(
    tmp_path: Path,
    fresh_upstream: UpstreamProcess,
    private_redis: PrivateRedis,  # noqa: F811
    proxied_redis: TcpProxy,
) -> None:
    # $0.0006: nine calls at their real cost; five of them are settled nowhere but in the ledger
    t = Tenant(tmp_path, fresh_upstream, f"redis://127.0.0.1:{proxied_redis.port}/0", "0.0006")
    r = redis.Redis(port=private_redis.port)
    gw = t.gateway()
    with gw:
        assert asyncio.run(race([gw.url], t.key, 1, body()))[0][0] == 200
        slow = in_background(lambda: asyncio.run(race([gw.url], t.key, 5, body("#latency:700"))))
        assert eventually(lambda: fresh_upstream.stats()["requests"] == 6)
        proxied_redis.stop()
        assert [s for s, _ in slow()] == [200] * 5
        gw.kill()  # its settlements die with it
    proxied_redis.start()
    (holds,) = r.scan_iter(f"passerelle:budget:tenant:{t.name}:*:holds")
    held = r.zrange(holds, 0, -1)
    assert len(held) == 5
    with t.gateway() as gw:
        # on start the dead replica's journal gives back the five calls whose ends it had not
        # written yet; their rows are in the ledger, so their holds are settled at the cost the
        # ledger has: counted once, in spent, and held nowhere
        assert books(r, t.name) == (ledger_nano(gw, t.name), 0)
        assert r.zcard(holds) == 0
        assert race_one(gw, t.key) == 200
        assert eventually(books_exact(r, gw, t.name)), (books(r, t.name), ledger_nano(gw, t.name))
        results = asyncio.run(race([gw.url], t.key, 20, body()))
        assert {s for s, _ in results} <= {200, 429}
        served, cost = spend(gw.url, t.name)
        assert served == fresh_upstream.stats()["requests"]
        assert cost <= t.usd + WORST, f"{served} calls spent ${cost} of ${t.usd}"
        assert eventually(books_exact(r, gw, t.name))


def race_one(gw: GatewayProcess, key: str) -> int:
    return asyncio.run(race([gw.url], key, 1, body()))[0][0]


# --- Redis loses everything mid-burst -------------------------------------------------------------


def flush(private_redis: PrivateRedis) -> None:  # noqa: F811
    redis.Redis(port=private_redis.port).flushdb()


def restart_empty(private_redis: PrivateRedis) -> None:  # noqa: F811
    private_redis.kill()
    private_redis.start()


@pytest.mark.parametrize("fault", [flush, restart_empty], ids=["flushdb", "restart"])
def test_redis_losing_its_state_mid_burst_hands_out_no_money_twice(
    tmp_path: Path,
    fresh_upstream: UpstreamProcess,
    private_redis: PrivateRedis,  # noqa: F811
    fault: Callable[[PrivateRedis], None],
) -> None:
    # $0.001: about fifteen worst cases fit; all are in flight when Redis loses its state
    t = Tenant(tmp_path, fresh_upstream, private_redis.url, "0.001")
    r = redis.Redis(port=private_redis.port)
    with t.gateway() as gw:
        first = in_background(lambda: asyncio.run(race([gw.url], t.key, 30, body("#latency:1500"))))
        assert settled_count(fresh_upstream) >= 10
        fault(private_redis)
        during: list[tuple[int, Any]] = []
        while not first.done():  # keep asking while the first burst's money is in flight
            during += asyncio.run(race([gw.url], t.key, 10, body()))
        results = first() + during
        time.sleep(1.0)  # past the recovery window
        results += asyncio.run(race([gw.url], t.key, 30, body()))
        codes = {(s, b["error"]["code"]) for s, b in results if s != 200}
        assert codes <= {(429, "insufficient_quota"), (503, "budget_store_unavailable")}, codes
        served, cost = spend(gw.url, t.name)
        assert served == [s for s, _ in results].count(200) == fresh_upstream.stats()["requests"]
        assert cost <= t.usd + WORST, f"{served} calls spent ${cost} of ${t.usd}\n{gw.stderr()}"
        assert eventually(books_exact(r, gw, t.name)), (books(r, t.name), ledger_nano(gw, t.name))


# --- Idempotency-Key around a flush ---------------------------------------------------------------


def post(gw: GatewayProcess, key: str, idem: str, content: str, n: int) -> list[tuple[int, Any]]:
    return asyncio.run(race([gw.url], key, n, body(content), headers={"Idempotency-Key": idem}))


def test_an_idempotency_key_in_flight_when_redis_is_flushed_runs_once(
    tmp_path: Path,
    fresh_upstream: UpstreamProcess,
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    t = Tenant(tmp_path, fresh_upstream, private_redis.url, "1")
    with t.gateway() as gw:
        first = in_background(lambda: post(gw, t.key, "k-flight", "#latency:1500", 1))
        assert eventually(lambda: fresh_upstream.stats()["requests"] == 1)
        flush(private_redis)
        during = post(gw, t.key, "k-flight", "#latency:1500", 5)
        time.sleep(1.0)
        after = post(gw, t.key, "k-flight", "#latency:1500", 5)
        assert first()[0][0] == 200
        codes = {(s, b["error"]["code"]) for s, b in during + after if s != 200}
        assert codes <= {
            (409, "idempotency_key_in_progress"),
            (503, "idempotency_store_unavailable"),
        }, codes
        replay = post(gw, t.key, "k-flight", "#latency:1500", 1)[0]
        assert replay[0] == 200, replay
        assert fresh_upstream.stats()["requests"] == 1


def test_an_answer_lost_with_redis_is_refused_not_run_again(
    tmp_path: Path,
    fresh_upstream: UpstreamProcess,
    private_redis: PrivateRedis,  # noqa: F811
) -> None:
    t = Tenant(tmp_path, fresh_upstream, private_redis.url, "1")
    with t.gateway() as gw:
        assert post(gw, t.key, "k-done", "", 1)[0][0] == 200
        flush(private_redis)
        again = post(gw, t.key, "k-done", "", 3)
        while again[-1][0] == 503:  # the recovery window; it ends
            time.sleep(0.1)
            again += post(gw, t.key, "k-done", "", 1)
            assert len(again) < 200, "the gateway never recovered"
        codes = {(s, b.get("error", {}).get("code")) for s, b in again}
        assert (409, "idempotency_answer_lost") in codes, codes
        assert codes <= {(409, "idempotency_answer_lost"), (503, "idempotency_store_unavailable")}
        message = json.dumps([b for _, b in again])
        assert "cannot be replayed" in message
        assert fresh_upstream.stats()["requests"] == 1


def postgres_nano(postgres_url: str, tenant: str) -> int:
    import asyncpg

    async def fetch() -> int:
        conn = await asyncpg.connect(postgres_url)
        try:
            pusd = await conn.fetchval(
                "SELECT COALESCE(SUM(cost_pusd), 0) FROM usage WHERE tenant = $1", tenant
            )
        finally:
            await conn.close()
        return int(pusd) // 1000

    return asyncio.run(fetch())


def test_two_replicas_put_back_their_money_in_flight_after_a_flush(
    tmp_path: Path,
    fresh_upstream: UpstreamProcess,
    private_redis: PrivateRedis,  # noqa: F811
    postgres_url: str,
) -> None:
    t = Tenant(tmp_path, fresh_upstream, private_redis.url, "0.001")
    t.config["store"] = postgres_url
    r = redis.Redis(port=private_redis.port)
    gws = [GatewayProcess(tmp_path / f"gw{i}", t.config, env={"RACE_KEY": t.key}) for i in (0, 1)]
    for gw in gws:
        gw.start()
    try:
        urls = [gw.url for gw in gws]
        first = in_background(lambda: asyncio.run(race(urls, t.key, 30, body("#latency:1500"))))
        assert settled_count(fresh_upstream) >= 10
        flush(private_redis)
        during: list[tuple[int, Any]] = []
        while not first.done():
            during += asyncio.run(race(urls, t.key, 10, body()))
        results = first() + during
        results += asyncio.run(race(urls, t.key, 30, body()))
        codes = {(s, b["error"]["code"]) for s, b in results if s != 200}
        assert codes <= {(429, "insufficient_quota"), (503, "budget_store_unavailable")}, codes
        served, cost = spend(gws[0].url, t.name)
        assert served == [s for s, _ in results].count(200) == fresh_upstream.stats()["requests"]
        assert cost <= t.usd + WORST, f"{served} calls spent ${cost} of ${t.usd}"
        exact = lambda: books(r, t.name) == (postgres_nano(postgres_url, t.name), 0)  # noqa: E731
        assert eventually(exact), (books(r, t.name), postgres_nano(postgres_url, t.name))
    finally:
        for gw in gws:
            gw.stop()
