"""The overhead benchmark: what Passerelle costs on top of a minimal proxy, on this machine.

    .venv/bin/python bench/overhead.py [--requests N] [--concurrency C] [--rounds R] [--json OUT]

One run starts three servers as subprocesses: the fake upstream (``tests/fakes/upstream.py``), the
reference pass-through proxy (``bench/reference_proxy.py``: aiohttp + uvloop, one pooled client
session) and ``passerelle serve`` with metering on (SQLite ledger in a temporary directory, a
tenant key, a model with a price). The proxy under test runs on core 0; this process (the load
generator) and the upstream on core 1, where the machine has two cores or more.

The same load drives each target: C concurrent keep-alive workers sending N small non-streaming
chat completions, after a warm-up. Rounds interleave the targets (direct upstream, reference,
gateway; then the same three streaming ``stream: true`` with ~20 content chunks), R times; the
table shows the medians over rounds. For each: requests/s, p50 and p99 latency, latency added
over the direct upstream (per round, then the median), and CPU per request of the proxy process,
all threads (the SQLite ledger writer included), read from ``/proc/<pid>/task/*/schedstat``
(nanoseconds; ``/proc/<pid>/stat`` utime+stime, in 10 ms ticks, is kept in the JSON as a
cross-check).

Afterwards the gateway's ledger is read back through ``GET /admin/usage``: every request sent to
the gateway must be exactly one ledger row. A mismatch, or any failed request, is printed loudly
and makes the exit status 1. The numbers themselves never fail anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from tests.fakes.gateway import (  # noqa: E402
    ADMIN_TOKEN,
    TENANT_KEYS,
    GatewayProcess,
    fake_upstream_config,
)
from tests.fakes.process import ServerProcess  # noqa: E402
from tests.fakes.upstream import UpstreamProcess  # noqa: E402

PROXY_CORE = 0
LOAD_CORE = 1
MODEL = "gpt-4o-mini"
STREAM_WORDS = 20
TARGETS = ("upstream", "reference", "gateway")
LABELS = {
    "upstream": "upstream direct",
    "reference": "reference aiohttp proxy",
    "gateway": "passerelle (metering on)",
}


# ----------------------------------------------------------------------------- processes


class ReferenceProcess(ServerProcess):
    name = "reference proxy"

    def __init__(self, upstream_url: str) -> None:
        super().__init__(timeout=30.0)
        self.upstream_url = upstream_url

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "bench" / "reference_proxy.py"),
            "--upstream",
            self.upstream_url,
            "--port",
            "0",
        ]


def tids(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def pin(pid: int, cores: set[int]) -> bool:
    """Pin every thread of a process (threads it starts later inherit the main thread's set)."""
    ok = True
    for tid in tids(pid):
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:
            ok = False
    return ok


def pinned_to(pid: int) -> set[int]:
    cores: set[int] = set()
    for tid in tids(pid):
        with contextlib.suppress(OSError):
            cores |= os.sched_getaffinity(tid)
    return cores


def cpu_ns(pid: int) -> int:
    """CPU time of all the process's live threads, in nanoseconds (schedstat)."""
    total = 0
    for tid in tids(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_stat_ns(pid: int) -> int:
    """utime + stime of /proc/<pid>/stat (exited threads included), in nanoseconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // CLK_TCK


def machine_busy_ns() -> tuple[int, int]:
    """Busy CPU time of the whole machine, all cores, and the hypervisor's steal, in ns."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy * 1_000_000_000 // CLK_TCK, v[7] * 1_000_000_000 // CLK_TCK


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------- load


@dataclass
class Run:
    target: str
    kind: str  # "plain" | "stream"
    round: int
    requests: int
    errors: int
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    proxy_cpu_ms: float | None  # per request, schedstat
    proxy_cpu_stat_ms: float | None  # per request, utime+stime
    upstream_cpu_ms: float
    loadgen_cpu_ms: float
    other_load: float = 0.0  # cores busy with other processes during the run
    steal: float = 0.0  # cores taken by the hypervisor during the run
    first_error: str | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None


@dataclass
class Target:
    name: str
    base_url: str
    headers: dict[str, str]
    pid: int | None  # the proxy process; None for the direct upstream
    sent: int = 0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def request_body(stream: bool) -> bytes:
    if stream:
        return orjson.dumps(
            {
                "model": MODEL,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"Count for me. #words:{STREAM_WORDS}"}],
            }
        )
    return orjson.dumps(
        {
            "model": MODEL,
            "max_tokens": 32,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello in one short sentence."},
            ],
        }
    )


async def drive(
    session: aiohttp.ClientSession, target: Target, n: int, concurrency: int, stream: bool
) -> tuple[float, list[float], int, str | None]:
    url = target.base_url + "/chat/completions"
    body = request_body(stream)
    headers = {"Content-Type": "application/json", **target.headers}
    todo = iter(range(n))
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal errors, first_error
        for _ in todo:
            t0 = clock()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    data = await resp.read()
                    ok = resp.status == 200 and (
                        data.endswith(b"data: [DONE]\n\n") if stream else data[:1] == b"{"
                    )
                    if not ok and first_error is None:
                        first_error = f"HTTP {resp.status}: {data[:200]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok = False
                first_error = first_error or repr(exc)
            latencies.append(clock() - t0)
            errors += not ok

    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    elapsed = clock() - t0
    target.sent += n
    return elapsed, latencies, errors, first_error


async def measure(
    session: aiohttp.ClientSession,
    target: Target,
    upstream_pid: int,
    n: int,
    concurrency: int,
    stream: bool,
    round_no: int,
) -> Run:
    me = os.getpid()

    def snapshot() -> tuple[int, ...]:
        return (
            cpu_ns(target.pid) if target.pid else 0,
            cpu_stat_ns(target.pid) if target.pid else 0,
            cpu_ns(upstream_pid),
            cpu_ns(me),
            *machine_busy_ns(),
        )

    before = snapshot()
    elapsed, latencies, errors, first_error = await drive(session, target, n, concurrency, stream)
    after = snapshot()
    delta = [a - b for a, b in zip(after, before, strict=True)]
    per = [d / 1e6 / n for d in delta]
    ours = delta[0] + delta[2] + delta[3]
    latencies.sort()
    return Run(
        target=target.name,
        kind="stream" if stream else "plain",
        round=round_no,
        requests=n,
        errors=errors,
        elapsed_s=elapsed,
        rps=n / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        p999_ms=percentile(latencies, 0.999) * 1000,
        max_ms=latencies[-1] * 1000 if latencies else math.nan,
        proxy_cpu_ms=per[0] if target.pid else None,
        proxy_cpu_stat_ms=per[1] if target.pid else None,
        upstream_cpu_ms=per[2],
        loadgen_cpu_ms=per[3],
        first_error=first_error,
        other_load=max(0.0, (delta[4] - delta[5] - ours) / 1e9 / elapsed),
        steal=delta[5] / 1e9 / elapsed,
    )


async def usage_totals(gateway_url: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            gateway_url + "/admin/usage",
            params={"group_by": "status"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as resp,
    ):
        resp.raise_for_status()
        doc: dict[str, Any] = await resp.json()
        return doc


async def benchmark(
    args: argparse.Namespace, targets: dict[str, Target], upstream_pid: int
) -> list[Run]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    runs: list[Run] = []
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:
        warm = max(200, args.requests // 5)
        for t in targets.values():  # connections, imports, caches, the ledger's first batches
            for stream in (False, True):
                await drive(session, t, warm if not stream else warm // 4, args.concurrency, stream)
        for r in range(args.rounds):
            for stream, n in ((False, args.requests), (True, args.stream_requests)):
                for name in TARGETS:
                    run = await measure(
                        session, targets[name], upstream_pid, n, args.concurrency, stream, r
                    )
                    runs.append(run)
                    print(
                        f"  round {r + 1}/{args.rounds} {run.kind:6} {name:9} "
                        f"{run.rps:7.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                        f"p99 {run.p99_ms:6.2f} ms  "
                        + (f"cpu {run.proxy_cpu_ms:.3f} ms/req" if run.proxy_cpu_ms else "")
                        + (
                            f"  other load {run.other_load:.2f} cores"
                            if run.other_load > 0.1
                            else ""
                        )
                        + (f"  steal {run.steal:.2f}" if run.steal > 0.05 else "")
                        + (f"  ERRORS {run.errors}" if run.errors else ""),
                        file=sys.stderr,
                        flush=True,
                    )
    # added latency, per round against the direct upstream of the same round and kind
    direct = {(x.kind, x.round): x for x in runs if x.target == "upstream"}
    for x in runs:
        base = direct[(x.kind, x.round)]
        x.added_p50_ms = x.p50_ms - base.p50_ms
        x.added_p99_ms = x.p99_ms - base.p99_ms
    return runs


# ----------------------------------------------------------------------------- report


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[Run]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in ("plain", "stream"):
        for name in TARGETS:
            rs = [x for x in runs if x.target == name and x.kind == kind]
            cpus = [x.proxy_cpu_ms for x in rs]
            out[f"{kind}/{name}"] = {
                "target": name,
                "kind": kind,
                "rounds": len(rs),
                "requests_per_round": rs[0].requests,
                "errors": sum(x.errors for x in rs),
                "rps": med([x.rps for x in rs]),
                "p50_ms": med([x.p50_ms for x in rs]),
                "p99_ms": med([x.p99_ms for x in rs]),
                "p999_ms": med([x.p999_ms for x in rs]),
                "max_ms": max(x.max_ms for x in rs),
                "added_p50_ms": med([x.added_p50_ms for x in rs]),
                "added_p99_ms": med([x.added_p99_ms for x in rs]),
                "proxy_cpu_ms": med(cpus),
                "proxy_cpu_ms_min": min((c for c in cpus if c is not None), default=None),
                "proxy_cpu_ms_max": max((c for c in cpus if c is not None), default=None),
                "proxy_cpu_stat_ms": med([x.proxy_cpu_stat_ms for x in rs]),
                "upstream_cpu_ms": med([x.upstream_cpu_ms for x in rs]),
                "loadgen_cpu_ms": med([x.loadgen_cpu_ms for x in rs]),
                "other_load": med([x.other_load for x in rs]),
            }
    for kind in ("plain", "stream"):
        ref = out[f"{kind}/reference"]["proxy_cpu_ms"]
        for name in TARGETS:
            row = out[f"{kind}/{name}"]
            cpu = row["proxy_cpu_ms"]
            row["cpu_ratio"] = cpu / ref if cpu is not None and ref else None
            # the same ratio taken round by round (neighbouring runs share the machine's mood)
            pairs = [
                (g.proxy_cpu_ms, r.proxy_cpu_ms)
                for g in runs
                for r in runs
                if g.target == name
                and r.target == "reference"
                and g.kind == r.kind == kind
                and g.round == r.round
                and g.proxy_cpu_ms
                and r.proxy_cpu_ms
            ]
            row["cpu_ratio_per_round"] = med([a / b for a, b in pairs])
    return out


def fmt(v: float | None, spec: str = ".2f", sign: bool = False) -> str:
    if v is None:
        return "—"
    return format(v, ("+" if sign else "") + spec)


def table(summary: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| target | requests/s | p50 ms | p99 ms | added p50 / p99 ms | CPU ms/request "
        "| CPU vs reference |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in ("plain", "stream"):
        for name in TARGETS:
            row = summary[f"{kind}/{name}"]
            label = LABELS[name]
            if kind == "stream":
                label += f", streaming ({STREAM_WORDS + 3} events)"
            added = (
                "—"
                if name == "upstream"
                else (
                    f"{fmt(row['added_p50_ms'], sign=True)} / {fmt(row['added_p99_ms'], sign=True)}"
                )
            )
            ratio = "—" if row["cpu_ratio"] is None else f"{row['cpu_ratio']:.1f}×"
            lines.append(
                f"| {label} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {added} | {fmt(row['proxy_cpu_ms'], '.3f')} | {ratio} |"
            )
    return "\n".join(lines)


def passerelle_version() -> str:
    """The commit of the tree the gateway ran from, '+dirty' when src/ has local changes."""
    import subprocess

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src")
    where = os.environ.get("PYTHONPATH")
    return head + ("+dirty" if dirty else "") + (f" (PYTHONPATH={where})" if where else "")


def machine(pinned: bool) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "usable_cores": sorted(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "aiohttp": aiohttp.__version__,
        "passerelle": passerelle_version(),
        "pinned": pinned,
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--requests", type=int, default=5000, help="non-streaming requests per target per round"
    )
    p.add_argument(
        "--stream-requests", type=int, default=1000, help="streaming requests per target per round"
    )
    p.add_argument("--concurrency", type=int, default=10, help="concurrent workers")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are shown)")
    p.add_argument("--json", metavar="OUT", help="also write every run and the summary here")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = os.sched_getaffinity(0)
    can_pin = not args.no_pin and {PROXY_CORE, LOAD_CORE} <= cores
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="passerelle-bench-") as tmp:
        upstream = UpstreamProcess()
        reference: ReferenceProcess | None = None
        gateway: GatewayProcess | None = None
        try:
            upstream.start()
            reference = ReferenceProcess(upstream.url)
            reference.start()
            config = fake_upstream_config(upstream.url)
            gateway = GatewayProcess(Path(tmp) / "gateway", config)
            gateway.start()
            assert upstream.process and reference.process and gateway.process
            pids = {
                "upstream": upstream.process.pid,
                "reference": reference.process.pid,
                "gateway": gateway.process.pid,
            }
            if can_pin:
                ok = pin(os.getpid(), {LOAD_CORE}) and pin(pids["upstream"], {LOAD_CORE})
                ok = pin(pids["reference"], {PROXY_CORE}) and ok
                ok = pin(pids["gateway"], {PROXY_CORE}) and ok
                if not ok:
                    print("warning: some threads could not be pinned", file=sys.stderr)
            targets = {
                "upstream": Target(
                    "upstream", upstream.base_url, {"Authorization": "Bearer sk-upstream"}, None
                ),
                "reference": Target(
                    "reference",
                    reference.base_url,
                    {"Authorization": "Bearer sk-upstream"},
                    pids["reference"],
                ),
                "gateway": Target(
                    "gateway",
                    gateway.base_url,
                    {"Authorization": f"Bearer {TENANT_KEYS['acme']}"},
                    pids["gateway"],
                ),
            }
            print(
                f"upstream {upstream.url}  reference {reference.url}  gateway {gateway.url}",
                file=sys.stderr,
            )
            runs = asyncio.run(benchmark(args, targets, pids["upstream"]))
            usage = asyncio.run(usage_totals(gateway.url))
            affinity = {k: sorted(pinned_to(pid)) for k, pid in pids.items()}
            rss = {k: rss_mib(pid) for k, pid in pids.items()}
        finally:
            for proc in (gateway, reference, upstream):
                if proc is not None:
                    proc.stop()
        gateway_stderr = gateway.stderr() if gateway else ""

    summary = summarise(runs)
    info = machine(can_pin)
    sent = targets["gateway"].sent
    rows = int(usage["totals"]["requests"])
    by_status = {d["status"]: d["requests"] for d in usage["data"]}
    failed = sum(x.errors for x in runs)

    print()
    print(table(summary, args))
    print()
    print(
        f"Machine: {info['nproc']} cores ({info['cpu'] or 'unknown CPU'}), Python "
        f"{info['python']}, aiohttp {info['aiohttp']}, Linux {info['kernel']}; "
        f"passerelle {info['passerelle']}. "
        + (
            f"Proxy under test pinned to core {PROXY_CORE}; load generator and upstream "
            f"to core {LOAD_CORE} (checked: {affinity})."
            if can_pin
            else "Not pinned."
        )
    )
    print(
        f"Load: {args.concurrency} concurrent keep-alive workers; {args.requests} requests "
        f"(streaming: {args.stream_requests}) per target per round; {args.rounds} interleaved "
        f"rounds, medians shown. CPU = all threads of the proxy process, per request."
    )
    print(
        "Direct upstream CPU per request (the fake itself): "
        f"{fmt(summary['plain/upstream']['upstream_cpu_ms'], '.3f')} ms plain, "
        f"{fmt(summary['stream/upstream']['upstream_cpu_ms'], '.3f')} ms streamed. "
        "Load generator: "
        f"{fmt(summary['plain/upstream']['loadgen_cpu_ms'], '.3f')} ms per request."
    )
    print("RSS at the end: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items() if v))
    print(
        "p99.9 / max latency, non-streaming: "
        + ", ".join(
            f"{LABELS[name]} {summary['plain/' + name]['p999_ms']:.1f} / "
            f"{summary['plain/' + name]['max_ms']:.1f} ms"
            for name in TARGETS
        )
    )
    ratio = summary["plain/gateway"]["cpu_ratio"]
    sratio = summary["stream/gateway"]["cpu_ratio"]
    print(
        f"Passerelle CPU per request vs the reference: {fmt(ratio, '.2f')}× non-streaming, "
        f"{fmt(sratio, '.2f')}× streaming (target: ≤ 3×); round by round, median: "
        f"{fmt(summary['plain/gateway']['cpu_ratio_per_round'], '.2f')}× and "
        f"{fmt(summary['stream/gateway']['cpu_ratio_per_round'], '.2f')}×."
    )
    other = [x.other_load for x in runs]
    steal = [x.steal for x in runs]
    noisy = sum(o > 0.1 for o in other)
    print(
        f"Other processes on the machine during the runs: median {statistics.median(other):.2f} "
        f"cores busy (max {max(other):.2f}); hypervisor steal median "
        f"{statistics.median(steal):.2f} cores."
    )
    if noisy:
        print(
            f"\nwarning: {noisy} of {len(runs)} runs shared the machine with other work "
            "(> 0.1 core): throughput and latency are disturbed, CPU per request less so. "
            "Run again on a quiet machine for README figures.",
            file=sys.stderr,
        )
    print(
        f"Ledger: {rows} rows for {sent} requests sent to the gateway ({by_status}); "
        f"total cost ${usage['totals']['cost_usd']}, "
        f"unpriced {usage['totals']['unpriced_requests']}."
    )
    status = 0
    if rows != sent or by_status.get("ok") != sent:
        print(
            f"\n!!! LEDGER MISMATCH: {rows} rows ({by_status}) for {sent} requests sent !!!\n",
            file=sys.stderr,
        )
        status = 1
    if failed:
        firsts = {f"{x.kind}/{x.target}": x.first_error for x in runs if x.first_error}
        print(f"\n!!! {failed} REQUESTS FAILED: {firsts} !!!\n", file=sys.stderr)
        status = 1
    if status and gateway_stderr:
        print("gateway stderr (tail):\n" + gateway_stderr[-3000:], file=sys.stderr)
    sys.stdout.flush()
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": vars(args),
                    "affinity": affinity,
                    "rss_mib": rss,
                    "ledger": {
                        "rows": rows,
                        "sent": sent,
                        "by_status": by_status,
                        "totals": usage["totals"],
                    },
                    "summary": summary,
                    "runs": [asdict(x) for x in runs],
                },
                indent=2,
            )
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
