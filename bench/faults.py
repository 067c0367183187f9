"""Shared-state faults under load: Redis flushed, restarted empty and cut, again and again.

The long version of ``tests/integration/test_redis_faults.py``. Two ``passerelle serve`` replicas
share a PostgreSQL ledger and a ``redis-server`` of this run's own (reached through a TCP proxy
that the run cuts), in front of the fake upstream. Client loops keep both replicas busy for
``--seconds`` while a fault is injected every ``--every`` seconds, in turn: ``FLUSHDB``, a restart
of Redis without persistence (it comes back empty), and a cut of ``--cut`` seconds (state kept,
connections dropped, settlements in flight fail). Two tenants:

* ``tight``: a hard budget that is spent early; the rest of the run tries to get past it;
* ``wide``: a budget never reached; a third of its requests carry an ``Idempotency-Key`` drawn
  from a small pool, so keys are reused while running, after answering, and across faults.

Printed at the end (and as JSON with ``--json``): requests by status, faults injected, the tight
tenant's spend against its budget + one worst case, for each tenant the ledger against Redis'
``spent`` and ``reserved`` once the calls are over, and how many keys ran upstream more than once.
Exit status 1 when a guarantee fails.

    python bench/faults.py --postgres postgresql://postgres@127.0.0.1:5432/test --seconds 40
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import redis  # noqa: E402
from tests.fakes.gateway import GatewayProcess, fake_upstream_config  # noqa: E402
from tests.fakes.tcp_proxy import TcpProxy  # noqa: E402
from tests.fakes.upstream import UpstreamProcess  # noqa: E402

# 10 prompt tokens reported, 100 completion (= max_tokens): $0.0000615 real, ~$0.0000624 worst
BODY = {"model": "gpt-4o-mini", "max_tokens": 100}
CONTENT = "hi #usage:10,100,0"
WORST_USD = Decimal("0.0000700")  # above the worst case of every body sent here
KEYS_IN_POOL = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """This run's own ``redis-server``, without persistence: a restart comes back empty."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.statuses: collections.Counter[str] = collections.Counter()
        self.executions: collections.Counter[str] = collections.Counter()  # key -> upstream runs
        self.faults: collections.Counter[str] = collections.Counter()
        self.stop_at = 0.0

    async def client(self, urls: list[str], keys: dict[str, str], seed: int) -> None:
        rnd = random.Random(seed)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < self.stop_at:
                tenant = "tight" if rnd.random() < 0.3 else "wide"
                headers = {"Authorization": f"Bearer {keys[tenant]}"}
                latency = rnd.choice([0, 0, 50, 300])
                content = f"{CONTENT} #latency:{latency}"
                idem = None
                if tenant == "wide" and rnd.random() < 0.33:
                    idem = f"k{rnd.randrange(KEYS_IN_POOL)}"
                    headers["Idempotency-Key"] = idem
                    content = f"{CONTENT} #latency:300 {idem}"  # one body per key
                body = {**BODY, "messages": [{"role": "user", "content": content}]}
                url = rnd.choice(urls) + "/v1/chat/completions"
                try:
                    async with session.post(url, json=body, headers=headers) as resp:
                        payload = await resp.json(content_type=None)
                        code = (
                            (payload.get("error") or {}).get("code") if resp.status != 200 else ""
                        )
                        self.statuses[f"{resp.status} {code}".strip()] += 1
                        replay = "x-passerelle-idempotent-replay" in resp.headers
                        if resp.status == 200 and idem is not None and not replay:
                            self.executions[idem] += 1
                except (TimeoutError, aiohttp.ClientError) as exc:
                    self.statuses[f"transport {type(exc).__name__}"] += 1

    async def inject(self, server: RedisServer, proxy: TcpProxy) -> None:
        kinds = ["flushdb", "restart", "cut"]
        n = 0
        while True:
            await asyncio.sleep(self.args.every)
            if time.monotonic() > self.stop_at - self.args.every / 2:
                return
            kind = kinds[n % len(kinds)]
            n += 1
            self.faults[kind] += 1
            if kind == "flushdb":
                redis.Redis(port=server.port).flushdb()
            elif kind == "restart":
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)
            else:
                await asyncio.to_thread(proxy.stop)
                await asyncio.sleep(self.args.cut)
                await asyncio.to_thread(proxy.start)


async def ledger_nano(postgres: str, tenant: str) -> int:
    conn = await asyncpg.connect(postgres)
    try:
        pusd = await conn.fetchval(
            "SELECT COALESCE(SUM(cost_pusd), 0) FROM usage WHERE tenant = $1", tenant
        )
    finally:
        await conn.close()
    return int(pusd) // 1000


def redis_books(port: int, tenant: str) -> tuple[int, int]:
    client = redis.Redis(port=port)
    spent = reserved = 0
    for key in client.scan_iter(f"passerelle:budget:tenant:{tenant}:*"):
        if key.endswith(b":holds"):
            continue
        s, r = client.hmget(key, "spent", "reserved")
        spent, reserved = spent + int(s or 0), reserved + int(r or 0)
    return spent, reserved


async def settle_down(postgres: str, port: int, tenants: list[str], within: float) -> bool:
    """Wait until Redis' books equal the ledger for every tenant (settlement retries land)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ok = True
        for t in tenants:
            ok = ok and redis_books(port, t) == (await ledger_nano(postgres, t), 0)
        if ok:
            return True
        await asyncio.sleep(0.2)
    return False


async def main(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:8]
    names = {"tight": f"faults-{run_id}-tight", "wide": f"faults-{run_id}-wide"}
    keys = {t: "sk-faults-" + uuid.uuid4().hex for t in names}
    server = RedisServer()
    server.start()
    with UpstreamProcess() as upstream, TcpProxy(("127.0.0.1", server.port)) as proxy:
        config = fake_upstream_config(
            upstream.url, store=args.postgres, redis=f"redis://127.0.0.1:{proxy.port}/0"
        )
        usd = {"tight": args.tight_usd, "wide": 1000.0}
        for t, name in names.items():
            env = f"env:FAULTS_KEY_{t.upper()}"
            budgets = [{"usd": usd[t], "period": "month"}]
            config["tenants"].append({"name": name, "keys": [env], "budgets": budgets})
        env = {f"FAULTS_KEY_{t.upper()}": k for t, k in keys.items()}
        with tempfile.TemporaryDirectory() as tmp:
            gws = [GatewayProcess(Path(tmp) / f"gw{i}", config, env=env) for i in range(2)]
            for gw in gws:
                gw.start()
            try:
                run = Run(args)
                run.stop_at = time.monotonic() + args.seconds
                started = time.monotonic()
                urls = [gw.url for gw in gws]
                await asyncio.gather(
                    run.inject(server, proxy),
                    *(run.client(urls, {t: keys[t] for t in keys}, i) for i in range(args.clients)),
                )
                elapsed = time.monotonic() - started
                settled = await settle_down(args.postgres, server.port, list(names.values()), 30)
            finally:
                for gw in gws:
                    gw.stop()
    books = {}
    for t, name in names.items():
        spent, reserved = redis_books(server.port, name)
        books[t] = {
            "ledger_nano": await ledger_nano(args.postgres, name),
            "redis_spent_nano": spent,
            "redis_reserved_nano": reserved,
        }
    server.stop()
    tight_usd = Decimal(books["tight"]["ledger_nano"]) / Decimal(10**9)
    twice = sorted(k for k, n in run.executions.items() if n > 1)
    unexpected = {
        s: n
        for s, n in run.statuses.items()
        if s
        not in (
            "200",
            "429 insufficient_quota",
            "503 budget_store_unavailable",
            "503 idempotency_store_unavailable",
            "409 idempotency_key_in_progress",
            "409 idempotency_answer_lost",
        )
    }
    report = {
        "seconds": round(elapsed, 1),
        "requests": sum(run.statuses.values()),
        "statuses": dict(run.statuses.most_common()),
        "faults": dict(run.faults),
        "tight_budget_usd": str(Decimal(str(args.tight_usd))),
        "tight_spent_usd": str(tight_usd),
        "tight_ceiling_usd": str(Decimal(str(args.tight_usd)) + WORST_USD),
        "books": books,
        "books_exact_after_recovery": settled,
        "idempotency_keys_run_more_than_once": twice,
        "unexpected_statuses": unexpected,
    }
    failed = (
        not settled
        or tight_usd > Decimal(str(args.tight_usd)) + WORST_USD
        or bool(twice)
        or bool(unexpected)
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['requests']} requests in {report['seconds']}s, faults {report['faults']}")
        for s, n in report["statuses"].items():
            print(f"  {n:>7}  {s}")
        print(
            f"tight tenant: spent ${tight_usd} of ${args.tight_usd} (ceiling "
            f"${report['tight_ceiling_usd']})"
        )
        for t, b in books.items():
            print(
                f"{t:>5}: ledger {b['ledger_nano']} n$, redis spent {b['redis_spent_nano']} n$, "
                f"reserved {b['redis_reserved_nano']} n$"
            )
        print(f"books exact after recovery: {settled}; keys run more than once: {len(twice)}")
        print("FAILED" if failed else "all guarantees held")
    return 1 if failed else 0


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--every", type=float, default=3.0, help="seconds between faults")
    p.add_argument("--cut", type=float, default=0.5, help="seconds a cut lasts")
    p.add_argument("--clients", type=int, default=24)
    p.add_argument("--tight-usd", type=float, default=0.003)
    p.add_argument("--json", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
