"""Instructions per request: the overhead benchmark's CPU column, counted instead of timed.

    .venv/bin/python bench/instructions.py [--requests N] [--stream-requests N] [--concurrency C]

CPU time per request (``bench/overhead.py``) moves by 10-20% from run to run on a shared virtual
machine: other tenants' load, caches, frequency. Counting the instructions a proxy executes is
repeatable to about 1% whatever else runs, so a before/after comparison of a few percent means
something. Each proxy (the reference aiohttp proxy, and ``passerelle serve`` with metering on, its
embedded SQLite ledger included) runs under ``valgrind --tool=callgrind`` with instrumentation off
until it is warm; then ``callgrind_control`` turns it on, the load generator (this process, not
counted) sends a warm-up, the counters are zeroed, N requests are sent (C concurrent keep-alive
workers, the same bodies as the overhead benchmark), and the counters are dumped: every thread of
the process, Python and C alike, divided by N. Plain and streamed (~20 content events) requests
are counted separately.

``--stages policy`` counts a second gateway too, with a stage on: ``policy`` is the data-class
policy with every request in a class that narrows the targets (``confidential``, EU only, the
fake provider in the EU), so its cost when on is the difference between the two rows; off, the
stage is not in the chain at all. ``cache_miss`` and ``cache_hit`` are the exact cache on, with
the overhead benchmark's bodies for those variants: every request a miss, or every one a hit.
``audit`` is the audit trail: a keyed, chained record per attempt, appended to the process's
spool file and stored in batches.
``pii`` is every call in a class that pseudonymises personal data (the bodies hold none and
repeat, so this is the stage's cost on text it has already read: the detector's memory answers;
``bench/pii.py`` measures fresh prompts with names), ``pii_skipped`` the stage in the chain with
every call in a class that allows personal data.

Comparing two versions: run it once per version (``PYTHONPATH=<other checkout>/src`` selects the
gateway's code, as for the overhead benchmark) and compare the ratios to the reference, which
the same run counts. Needs valgrind (Debian's package); each proxy runs ~50 times slower under
it, so the defaults take about two minutes (two more per stage).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from bench.overhead import (  # noqa: E402
    ReferenceProcess,
    passerelle_version,
    request_body,
)
from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config  # noqa: E402
from tests.fakes.upstream import UpstreamProcess  # noqa: E402

START_TIMEOUT_S = 300.0
TOTALS_RE = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.M)


def with_policy(config: dict[str, Any]) -> dict[str, str]:
    """The data-class policy on, every request confidential (EU only; the fake is in the EU)."""
    config["providers"][0]["jurisdiction"] = "EU"
    config["sovereignty"] = {
        "classes": {"internal": {"allow": ["any"]}, "confidential": {"allow": ["EU"]}}
    }
    return {"X-Passerelle-Data-Class": "confidential"}


def with_cache(config: dict[str, Any]) -> dict[str, str]:
    """The exact cache on; the requests' bodies (``request_body``) make every one a miss
    (``cache_miss``) or a hit (``cache_hit``)."""
    config["cache"] = {"exact": {"ttl_s": 3600}}
    return {}


def with_audit(config: dict[str, Any]) -> dict[str, str]:
    """The audit trail on: a chained record per attempt, spooled to its file, stored in batches."""
    os.environ.setdefault("PASSERELLE_BENCH_AUDIT_KEY", "a key for the benchmark")
    config["audit"] = {"key": "env:PASSERELLE_BENCH_AUDIT_KEY"}
    return {}


def with_personal_data(config: dict[str, Any]) -> dict[str, str]:
    """Every call in a class that pseudonymises personal data: each is read by the detector (the
    benchmark's bodies hold none, and repeat, so after the first the detector's memory answers)."""
    config["sovereignty"] = {
        "classes": {"internal": {"allow": ["any"], "personal_data": "pseudonymise"}},
        "detection": {"timeout_ms": 120_000},  # the model runs ~50 times slower under callgrind
    }
    return {}


def with_personal_data_skipped(config: dict[str, Any]) -> dict[str, str]:
    """The personal-data stage in the chain (another class pseudonymises) but every call in a
    class that allows personal data: the stage's cost when it has nothing to do."""
    config["sovereignty"] = {
        "classes": {
            "internal": {"allow": ["any"], "personal_data": "allow"},
            "other": {"allow": ["any"], "personal_data": "pseudonymise"},
        }
    }
    return {}


def with_semantic(config: dict[str, Any]) -> dict[str, str]:
    """The exact and the semantic cache on (the ``semantic`` extra); every request a miss
    (``semantic_miss``) or a semantic hit: the same words, spaced anew (``semantic_hit``)."""
    config["cache"] = {"exact": {"ttl_s": 3600}, "semantic": {"models": ["gpt-4o-mini"]}}
    return {}


# a stage to count on top of metering: (config) -> the request headers that exercise it
STAGES = {
    "policy": with_policy,
    "cache_miss": with_cache,
    "cache_hit": with_cache,
    "audit": with_audit,
    "pii": with_personal_data,
    "pii_skipped": with_personal_data_skipped,
    "semantic_miss": with_semantic,
    "semantic_hit": with_semantic,
}


def under_callgrind(cmd: list[str], out: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *cmd,
    ]


class CountedGateway(GatewayProcess):
    def __init__(self, workdir: Path, config: dict[str, Any], out: Path) -> None:
        super().__init__(workdir, config)
        self.timeout = START_TIMEOUT_S
        self.out = out

    def command(self) -> list[str]:
        return under_callgrind(super().command(), self.out)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "PYTHONMALLOC": "malloc"}


class CountedReference(ReferenceProcess):
    def __init__(self, upstream_url: str, out: Path) -> None:
        super().__init__(upstream_url)
        self.timeout = START_TIMEOUT_S
        self.out = out

    def command(self) -> list[str]:
        return under_callgrind(super().command(), self.out)

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONMALLOC": "malloc"}


def control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=60
    )


def dumped_total(out: Path, before: set[Path]) -> int:
    """The instruction total of the dump ``callgrind_control --dump`` just wrote."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = [p for p in out.parent.glob(out.name + "*") if p not in before and p.stat().st_size]
        for path in new:
            found = TOTALS_RE.findall(path.read_bytes())
            if found:
                return max(int(n) for n in found)
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump appeared next to {out}")


async def send(
    url: str, headers: dict[str, str], n: int, concurrency: int, stream: bool, target: str
) -> int:
    """N requests, C at a time, the bodies ``target`` gets in the overhead benchmark (one of its
    own each for ``cache_miss``); returns how many failed."""
    body = request_body(stream, target)
    fresh = target in ("cache_miss", "semantic_miss", "semantic_hit")
    todo = iter(range(n))
    failed = 0
    timeout = aiohttp.ClientTimeout(total=120)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for _ in todo:
            data = request_body(stream, target) if fresh else body
            async with session.post(url, data=data, headers=headers) as resp:
                data = await resp.read()
                good = data.endswith(b"data: [DONE]\n\n") if stream else data[:1] == b"{"
                failed += resp.status != 200 or not good

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(min(n, concurrency))))
    return failed


def count(
    name: str, proc: Any, url: str, headers: dict[str, str], args: argparse.Namespace, stream: bool
) -> float:
    """Instructions per request of ``proc`` (instrumented already), for one kind."""
    pid, out = proc.process.pid, proc.out
    n = args.stream_requests if stream else args.requests
    failed = asyncio.run(send(url, headers, args.warmup, args.concurrency, stream, name))
    control(pid, "--zero")
    failed += asyncio.run(send(url, headers, n, args.concurrency, stream, name))
    before = set(out.parent.glob(out.name + "*"))
    control(pid, "--dump")
    total = dumped_total(out, before)
    if failed:
        raise RuntimeError(f"{failed} requests failed")
    return total / n


def measure(
    name: str, proc: Any, url: str, headers: dict[str, str], args: argparse.Namespace
) -> dict[str, float]:
    pid = proc.process.pid
    control(pid, "--instr=on")
    result = {}
    for stream in (False, True):
        kind = "stream" if stream else "plain"
        print(f"  {name:<10} {kind:<6} counting...", end="", flush=True)
        result[kind] = count(name, proc, url, headers, args, stream)
        print(f" {result[kind] / 1e6:7.2f} M instructions per request", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=400, help="counted plain requests")
    p.add_argument("--stream-requests", type=int, default=150, help="counted streamed requests")
    p.add_argument("--warmup", type=int, default=100, help="requests before counting starts")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument(
        "--stages", nargs="*", default=[], choices=sorted(STAGES), help="also count with these on"
    )
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="passerelle-instructions-") as tmp_name:
        tmp = Path(tmp_name)
        with UpstreamProcess() as upstream:
            print(f"upstream {upstream.url}; starting the proxies under callgrind", flush=True)
            with CountedReference(upstream.base_url, tmp / "reference.cg") as ref:
                results["reference"] = measure(
                    "reference", ref, ref.url + "/v1/chat/completions", {}, args
                )
            for name in ["gateway", *args.stages]:
                config = fake_upstream_config(upstream.url)
                headers = {"Authorization": f"Bearer {TENANT_KEYS['acme']}"}
                if name in STAGES:
                    headers.update(STAGES[name](config))
                with CountedGateway(tmp / name, config, tmp / f"{name}.cg") as gw:
                    results[name] = measure(
                        name, gw, gw.base_url + "/chat/completions", headers, args
                    )
    ref, gw = results["reference"], results["gateway"]
    print()
    print("| target | plain, M instructions/request | streaming, M instructions/request |")
    print("|---|---:|---:|")
    print(f"| reference aiohttp proxy | {ref['plain'] / 1e6:.2f} | {ref['stream'] / 1e6:.2f} |")
    print(
        f"| passerelle (metering on) | {gw['plain'] / 1e6:.2f} ({gw['plain'] / ref['plain']:.2f}×)"
        f" | {gw['stream'] / 1e6:.2f} ({gw['stream'] / ref['stream']:.2f}×) |"
    )
    for name in args.stages:
        on = results[name]
        print(
            f"| + {name} | {on['plain'] / 1e6:.2f} ({on['plain'] - gw['plain']:+,.0f}, "
            f"{on['plain'] / gw['plain']:.2f}×) | {on['stream'] / 1e6:.2f} "
            f"({on['stream'] - gw['stream']:+,.0f}, {on['stream'] / gw['stream']:.2f}×) |"
        )
    print()
    print(
        f"passerelle {passerelle_version()}; {args.requests} plain and {args.stream_requests} "
        f"streamed requests counted after {args.warmup} of warm-up, {args.concurrency} concurrent"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
