"""The soak benchmark: a bounded sustained load, budgets and rate limits on, watched for drift.

    .venv/bin/python bench/soak.py [--duration 900] [--rate 200] [--interval 60] [--warmup 180]

It starts the fake upstream (``tests/fakes/upstream.py``) and one ``passerelle serve`` with a
SQLite ledger in a temporary directory, a priced model, and for the load's tenant a hard daily
budget and ``rate_limits`` it never reaches (admission reserves, settles and counts on every
request, and refuses none). The load is open-loop at ``--rate`` requests per second (a request
starts on schedule whether or not earlier ones have returned; ``--concurrency`` caps those in
flight), a mix of plain and streamed chat completions (``--stream-share``), every fifth one with
an ``Idempotency-Key``, over keep-alive connections.

Every ``--interval`` seconds it prints one line: requests answered, throughput, p50 and p99
latency, errors, and the gateway's RSS. At the end: the RSS growth from the end of the warm-up to
the end of the run, the ledger checked against what was sent (every answered request is one row),
and the verdict. Exit status 1 when any request failed, the ledger disagrees, or memory grew by
more than ``--max-growth`` (5%) after the warm-up; the numbers otherwise fail nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

KEY = TENANT_KEYS["acme"]


@dataclass
class Window:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak_config(
    upstream_url: str, idempotency_max_bytes: int, limits: bool = True
) -> dict[str, object]:
    config = fake_upstream_config(
        upstream_url, server={"idempotency_max_bytes": idempotency_max_bytes}
    )
    if not limits:
        return config
    config["tenants"] = [
        {
            "name": "acme",
            "keys": ["env:TENANT_KEY_ACME"],
            "budgets": [{"usd": 100000, "period": "day", "kind": "hard"}],
            "rate_limits": {"rpm": 10_000_000, "tpm": 10_000_000_000},
        },
        {"name": "globex", "keys": ["env:TENANT_KEY_GLOBEX"]},
    ]
    return config


async def one(
    http: aiohttp.ClientSession,
    url: str,
    n: int,
    stream: bool,
    window: Window,
    sent: list[int],
    idempotent: bool,
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"soak request {n} #usage:40,20,0"}],
        "stream": stream,
        "max_tokens": 64,
    }
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    if idempotent and n % 5 == 0:
        headers["Idempotency-Key"] = f"soak-{n}"
    started = time.perf_counter()
    try:
        async with http.post(url, data=json.dumps(body), headers=headers) as resp:
            raw = await resp.read()
            if resp.status != 200:
                window.fail(f"HTTP {resp.status}")
            elif stream and not raw.rstrip().endswith(b"data: [DONE]"):
                window.fail("stream incomplete")
            else:
                window.latencies_ms.append((time.perf_counter() - started) * 1000)
    except (aiohttp.ClientError, TimeoutError) as exc:
        window.fail(type(exc).__name__)
    finally:
        sent[0] += 1


async def drive(args: argparse.Namespace, gw: GatewayProcess) -> tuple[int, int, list[float]]:
    """Run the load; returns (sent, errors, RSS at each interval's end)."""
    assert gw.process is not None
    url = gw.base_url + "/chat/completions"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    gate = asyncio.Semaphore(args.concurrency)
    sent, errors, rss = [0], 0, []
    window = Window()
    tasks: set[asyncio.Task[None]] = set()

    async def gated(n: int, stream: bool, w: Window) -> None:
        async with gate:
            await one(http, url, n, stream, w, sent, args.idempotency)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        next_report = start + args.interval
        n = 0
        while (now := time.perf_counter()) - start < args.duration:
            due = int((now - start) * args.rate)
            while n < due:
                stream = (n % 100) < args.stream_share * 100
                t = asyncio.create_task(gated(n, stream, window))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
            if now >= next_report:
                answered = len(window.latencies_ms)
                rss.append(rss_mib(gw.process.pid))
                print(
                    f"{now - start:7.0f} s  {answered + window.errors:7d} answered  "
                    f"{(answered + window.errors) / args.interval:7.1f} req/s  "
                    f"p50 {percentile(window.latencies_ms, 0.5):6.1f} ms  "
                    f"p99 {percentile(window.latencies_ms, 0.99):6.1f} ms  "
                    f"errors {window.errors} {window.error_kinds or ''}  RSS {rss[-1]:.1f} MiB",
                    flush=True,
                )
                errors += window.errors
                window = Window()
                next_report += args.interval
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    errors += window.errors
    rss.append(rss_mib(gw.process.pid))
    return sent[0], errors, rss


def ledger_rows(gw: GatewayProcess) -> int:
    with closing(sqlite3.connect(gw.workdir / "passerelle-data" / "ledger.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM usage").fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=900.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=200.0, help="requests started per second")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight, at most")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between reports")
    parser.add_argument(
        "--warmup",
        type=float,
        default=180.0,
        help="seconds before the memory baseline: longer than the rate limits' one-minute "
        "windows and the idempotency store's filling, which grow until they are full",
    )
    parser.add_argument("--stream-share", type=float, default=0.3, help="share of streams")
    parser.add_argument(
        "--no-idempotency",
        dest="idempotency",
        action="store_false",
        help="send no Idempotency-Key (by default every fifth request has one)",
    )
    parser.add_argument(
        "--no-limits",
        dest="limits",
        action="store_false",
        help="no budget nor rate limit (to tell their memory from the rest)",
    )
    parser.add_argument(
        "--idempotency-max-bytes",
        type=int,
        default=2 * 1024 * 1024,
        help="the gateway's idempotency store bound: small, so that it fills during the warm-up "
        "(the store is bounded, not leaking; at the default 64 MiB it takes hours to fill)",
    )
    parser.add_argument(
        "--max-growth", type=float, default=0.05, help="RSS growth allowed after the warm-up"
    )
    args = parser.parse_args(argv)
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    tmp = tempfile.mkdtemp(prefix="passerelle-soak-")
    with UpstreamProcess() as up:
        config = soak_config(up.url, args.idempotency_max_bytes, args.limits)
        with GatewayProcess(Path(tmp), config) as gw:
            assert gw.process is not None
            print(
                f"soak: {args.rate:.0f} req/s for {args.duration:.0f} s "
                f"({args.stream_share:.0%} streamed, budgets and rate limits "
                f"{'on' if args.limits else 'off'}); "
                f"RSS at start {rss_mib(gw.process.pid):.1f} MiB",
                flush=True,
            )
            sent, errors, rss = asyncio.run(drive(args, gw))
            time.sleep(0.5)  # the ledger writer's last batch
            rows = ledger_rows(gw)
    shutil.rmtree(tmp, ignore_errors=True)
    baseline_index = max(0, int(args.warmup // args.interval) - 1)
    baseline = rss[min(baseline_index, len(rss) - 1)]
    growth = (rss[-1] - baseline) / baseline
    print(
        f"sent {sent}, errors {errors}, ledger rows {rows}; RSS after warm-up {baseline:.1f} MiB, "
        f"at the end {rss[-1]:.1f} MiB: growth {growth:+.1%} (allowed {args.max_growth:.0%})"
    )
    failures = []
    if errors:
        failures.append(f"{errors} requests failed")
    if rows != sent:
        failures.append(f"{rows} ledger rows for {sent} requests")
    if growth > args.max_growth:
        failures.append(f"memory grew {growth:.1%} after the warm-up")
    print("FAIL: " + "; ".join(failures) if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
