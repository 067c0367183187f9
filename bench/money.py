"""Money under concurrency, the long version: budgets, rate limits and margin floors under attack.

    .venv/bin/python bench/money.py [--requests N] [--postgres URL] [--redis URL] [--json OUT]

Two ``passerelle serve`` replicas share one PostgreSQL ledger and one Redis; the fake upstream
(``tests/fakes/upstream.py``) answers long replies. Each scenario sends N concurrent requests
(1,000 by default), spread over both replicas, from tenants unique to the run:

- **budget**: a hard $1/day budget on a model at $10/$60 per million tokens, with the output
  ceiling at 1,000 tokens. The mix: plain and streamed, with no ``max_tokens``, a small one, one
  above the ceiling (capped), clients that leave after the first chunk, pairs sharing an
  ``Idempotency-Key``, and upstream 503s scripted so that some attempts are retried; every reply
  asks for 5,000 words. Spend, read from the ledger, must be at most the budget plus one request's
  worst case, and no row may hold more output than the ceiling.
- **rpm**: ``rpm: 100``: exactly 100 served.
- **tpm**: ``tpm: 20000``, streams without ``max_tokens`` asking for 2,000 words: the tokens of the
  served calls (ledger) must be at most 20,000.
- **floor**: plan ``pro`` ($1/month, floor 20%, degrade) on ``premium`` ($100/M, degrades to
  ``cheap``; a worst case of about $0.10 at the ceiling): premium calls are admitted while the
  month's spent plus reserved is under the floor, so premium spend is at most the floor plus one
  premium worst case; every other call is degraded.

It prints one line per scenario and exits 1 when an invariant breaks; the figures themselves
(requests/s, how many were served) never fail anything. It takes about a minute on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tests.fakes.gateway import GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess
from tests.integration.test_margins import MODELS as FLOOR_MODELS

from passerelle.pricing.estimate import estimate_prompt_tokens
from passerelle.store.records import from_pico

CEILING = 1000
DEAR = {"input": 10, "output": 60}
# the margin-floor pair (premium degrading to cheap) is the one the floor tests use
MODELS = [
    {"name": "dear", "targets": [{"provider": "fake", "upstream_model": "dear-1", "price": DEAR}]},
    *FLOOR_MODELS,
]
PLAN = {
    "name": "pro",
    "monthly_usd": 1,
    "margin_floor": {"max_cost_share": 0.2, "action": "degrade"},
}


def budget_request(i: int) -> tuple[dict[str, Any], dict[str, str], bool]:
    """The i-th request of the budget mix: (body, extra headers, leave after the first chunk)."""
    words = "please #words:5000"
    body: dict[str, Any] = {"model": "dear", "messages": [{"role": "user", "content": words}]}
    headers: dict[str, str] = {}
    kind = i % 8
    if kind == 1:
        body["max_tokens"] = 5 * CEILING  # above the ceiling: capped
    elif kind == 2:
        body["max_tokens"] = 200
    elif kind in (3, 4, 5):
        body["stream"] = True
        if kind == 4:
            body["max_completion_tokens"] = 500
        if kind == 5:
            body["messages"][0]["content"] += " #chunk_delay:2"
    elif kind in (6, 7):
        headers["Idempotency-Key"] = f"pair-{i // 8}"  # requests 6 and 7 of each eight share it
    return body, headers, kind == 5


async def fire(
    urls: list[str], key: str, n: int, make: Any
) -> tuple[collections.Counter[int], float]:
    """n requests at once over the replicas; returns the statuses and the seconds it took."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    statuses: collections.Counter[int] = collections.Counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            body, extra, leave = make(i)
            headers = {"Authorization": f"Bearer {key}", **extra}
            url = urls[i % len(urls)] + "/v1/chat/completions"
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    statuses[resp.status] += 1
                    if leave and resp.status == 200:
                        await resp.content.readany()
                        resp.close()  # the client leaves mid-stream
                        return
                    await resp.read()
            except aiohttp.ClientError:
                statuses[0] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
    return statuses, time.perf_counter() - started


async def rows_of(pg: str, tenant: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg)
    try:
        return await conn.fetch(
            "SELECT status, upstream_model, input_tokens, output_tokens, cost_pusd, decision "
            "FROM usage WHERE tenant = $1",
            tenant,
        )
    finally:
        await conn.close()


async def settled(pg: str, tenant: str, want: int, timeout: float = 30.0) -> list[asyncpg.Record]:
    """The tenant's rows once the writers have committed them (``want`` rows at least)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await rows_of(pg, tenant)
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


def check(name: str, ok: bool, line: str, failures: list[str]) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name:7} {line}", flush=True)
    if not ok:
        failures.append(name)


async def run(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:8]
    tenants = {k: f"money-{k}-{run_id}" for k in ("budget", "rpm", "tpm", "floor")}
    keys = {k: f"sk-money-{k}-" + uuid.uuid4().hex for k in tenants}
    extra = {
        "budget": {"budgets": [{"usd": 1, "period": "day"}]},
        "rpm": {"rate_limits": {"rpm": 100}},
        "tpm": {"rate_limits": {"tpm": 20000}},
        "floor": {"plan": "pro"},
    }
    n, failures, report = args.requests, [], {}
    with UpstreamProcess() as upstream, tempfile.TemporaryDirectory() as tmp:
        config = fake_upstream_config(
            upstream.url,
            store=args.postgres,
            redis=args.redis,
            server={"default_max_tokens_ceiling": CEILING},
        )
        config["models"] += MODELS
        config["plans"] = [PLAN]
        for k, tenant in tenants.items():
            config["tenants"].append(
                {"name": tenant, "keys": [f"env:MONEY_KEY_{k.upper()}"], **extra[k]}
            )
        env = {f"MONEY_KEY_{k.upper()}": v for k, v in keys.items()}
        gws = [GatewayProcess(Path(tmp) / f"gw{i}", config, env=env) for i in range(2)]
        for gw in gws:
            gw.start()
        urls = [g.url for g in gws]
        try:
            # budget: some first attempts meet a 503 and are retried
            upstream.script(*[{"status": 503}] * 20)
            statuses, took = await fire(urls, keys["budget"], n, budget_request)
            rows = await settled(args.postgres, tenants["budget"], statuses[200])
            spent = sum((from_pico(r["cost_pusd"] or 0) for r in rows), Decimal(0))
            prompt = estimate_prompt_tokens(budget_request(0)[0])
            worst = (Decimal(prompt) * DEAR["input"] + CEILING * DEAR["output"]) / 10**6
            most_output = max((r["output_tokens"] for r in rows), default=0)
            ok = spent <= 1 + worst and most_output <= CEILING and statuses[200] > 0
            check(
                "budget",
                ok,
                f"{dict(statuses)} in {took:.1f}s; spent ${spent} of $1 (+ one worst case "
                f"${worst}); most output in a row {most_output} (ceiling {CEILING})",
                failures,
            )
            report["budget"] = {
                "statuses": dict(statuses),
                "spent": str(spent),
                "worst": str(worst),
            }
            upstream.reset()

            def small(i: int) -> tuple[dict[str, Any], dict[str, str], bool]:
                msgs = [{"role": "user", "content": "hi"}]
                return {"model": "gpt-4o-mini", "max_tokens": 10, "messages": msgs}, {}, False

            statuses, took = await fire(urls, keys["rpm"], n, small)
            check("rpm", statuses[200] == 100, f"{dict(statuses)} in {took:.1f}s", failures)
            report["rpm"] = dict(statuses)

            def long_stream(i: int) -> tuple[dict[str, Any], dict[str, str], bool]:
                msgs = [{"role": "user", "content": "talk #words:2000"}]
                return {"model": "gpt-4o-mini", "stream": True, "messages": msgs}, {}, False

            statuses, took = await fire(urls, keys["tpm"], n, long_stream)
            rows = await settled(args.postgres, tenants["tpm"], statuses[200])
            tokens = sum(
                r["input_tokens"] + r["output_tokens"] for r in rows if r["status"] == "ok"
            )
            check(
                "tpm",
                0 < tokens <= 20000,
                f"{dict(statuses)} in {took:.1f}s; {tokens} tokens served of 20,000 a minute",
                failures,
            )
            report["tpm"] = {"statuses": dict(statuses), "tokens": tokens}

            # usage as a real upstream reports it: a prompt no longer than the gateway estimates
            ask = {
                "model": "premium",
                "messages": [{"role": "user", "content": "hi #usage:10,2000"}],
            }

            def premium(i: int) -> tuple[dict[str, Any], dict[str, str], bool]:
                return ask, {}, False

            statuses, took = await fire(urls, keys["floor"], n, premium)
            rows = await settled(args.postgres, tenants["floor"], statuses[200])
            on_premium = [r for r in rows if r["upstream_model"] == "premium-1"]
            premium_spent = sum((from_pico(r["cost_pusd"] or 0) for r in on_premium), Decimal(0))
            worst = (Decimal(estimate_prompt_tokens(ask)) + CEILING) * 100 / 10**6
            degraded = sum(1 for r in rows if (r["decision"] or "").startswith("degraded"))
            floor = Decimal("0.2")
            check(
                "floor",
                premium_spent <= floor + worst and degraded == len(rows) - len(on_premium),
                f"{dict(statuses)} in {took:.1f}s; {len(on_premium)} served on premium "
                f"(${premium_spent}; floor ${floor}, one premium worst case ${worst}), "
                f"{degraded} degraded",
                failures,
            )
            report["floor"] = {"statuses": dict(statuses), "premium": len(on_premium)}
        finally:
            for gw in gws:
                gw.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if failures:
        print("FAILED: " + ", ".join(failures), flush=True)
    return 1 if failures else 0


def main() -> None:
    # the replicas run these sources, like this process
    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per scenario (1000)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PASSERELLE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/passerelle"
        ),
        help="the shared ledger",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("PASSERELLE_TEST_REDIS", "redis://127.0.0.1:6379/0"),
        help="the shared counters",
    )
    parser.add_argument("--json", help="write the figures there")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
