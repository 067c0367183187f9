"""The overhead benchmark: what Passerelle costs on top of a minimal proxy, on this machine.

    .venv/bin/python bench/overhead.py [--requests N] [--concurrency C] [--rounds R] [--json OUT]

One run starts these servers as subprocesses: the fake upstream (``tests/fakes/upstream.py``), the
reference pass-through proxy (``bench/reference_proxy.py``: aiohttp + uvloop, one pooled client
session) and six ``passerelle serve``, each with its own SQLite ledger in a temporary directory:

- ``gateway``: metering on (a tenant key, a model with a price);
- ``routing``: the same, the model asked for being a learned route over two priced models
  (``routes:``, ``docs/routing.md``), its artefact trained at start on synthetic outcomes with
  the shipped 4,096 feature buckets: every request pays for the route's features, prediction,
  choice and reroute, and its ledger row records the choice;
- ``limits``: the same plus, for the benchmark tenant, a hard monthly budget of $1,000,000, a
  per-day feature budget the requests do not fall under, a hard per-day budget of $1,000,000 on
  its key, and ``rate_limits: {rpm: 10000000, tpm: 10000000000}``: admission reserves and settles
  two budget counters and counts two sliding windows, in process, on every request, and never
  refuses;
- ``cache_miss`` and ``cache_hit``: metering on with ``cache: {exact: {ttl_s: 3600}}`` and
  requests at ``temperature: 0``; ``cache_miss`` sends each request a body no earlier one had (so
  each is looked up, answered upstream, captured and stored: the cost of the cache on a miss),
  ``cache_hit`` the same body every time (each answered from the stored entry, plain or streamed:
  the cost of a hit, against the pass-through it replaces);
- ``limits_redis``: the same with ``redis:`` (``--redis``, default ``redis://127.0.0.1:6379/0``)
  and a tenant and key unique to the run, so counters of earlier runs do not collide (they are
  deleted at the end). Skipped, with a note, when Redis cannot be reached (or ``--no-redis``).

Every proxy under test runs on core 0, one under load at a time; this process (the load generator)
and the upstream on core 1, where the machine has two cores or more. Redis is a shared service and
is left where it runs (not pinned).

The same load drives each target: C concurrent keep-alive workers sending N small non-streaming
chat completions, after a warm-up. Rounds interleave the targets (direct upstream, reference,
the five gateways; then direct upstream, reference, the plain gateway and the two cache
variants streaming,
``stream: true`` with ~20 content chunks; ``--stream-all`` streams the two limit variants too),
R times; the table shows the medians over rounds. The two variants get ``--limits-requests``
(1,000) per round: their cost per request grows with the requests of the last minute, which their
exact sliding windows keep (the window each run saw, and a fit of CPU against it, are printed).
For each: requests/s, p50 and p99 latency,
latency added over the direct upstream (per round, then the median), and CPU per request of the
proxy process, all threads (the SQLite ledger writer included), read from
``/proc/<pid>/task/*/schedstat`` (nanoseconds; ``/proc/<pid>/stat`` utime+stime, in 10 ms ticks,
is kept in the JSON as a cross-check). For the Redis variant the Redis server's CPU per request
(its pid from ``INFO server``, read from ``/proc`` the same way) is a column of its own, and
``INFO commandstats`` gives the scripts run per request.

Afterwards each gateway's ledger is read back through ``GET /admin/usage``: every request sent to
it must be exactly one ledger row with status ``ok``. A mismatch, or any failed request, is printed
loudly and makes the exit status 1; so does a Redis budget counter still holding reservations once
every request has been answered. The numbers themselves never fail anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
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

from passerelle.routing.features import Hashing  # noqa: E402
from passerelle.routing.train import Outcome, train  # noqa: E402
from passerelle.tenancy import key_digest, key_id_for  # noqa: E402

PROXY_CORE = 0
LOAD_CORE = 1
MODEL = "gpt-4o-mini"
STREAM_WORDS = 20
TARGETS = (
    "upstream",
    "reference",
    "gateway",
    "cache_miss",
    "cache_hit",
    "semantic_miss",
    "semantic_hit",
    "routing",
    "limits",
    "limits_redis",
)
GATEWAYS = (
    "gateway",
    "cache_miss",
    "cache_hit",
    "semantic_miss",
    "semantic_hit",
    "routing",
    "limits",
    "limits_redis",
)
SEMANTIC = ("semantic_miss", "semantic_hit")  # the semantic cache on too (the `semantic` extra)
CACHED = ("cache_miss", "cache_hit", *SEMANTIC)  # every request a miss, or a hit
FRESH = ("cache_miss", "semantic_miss")  # a body of its own for every request
LIMIT_VARIANTS = ("limits", "limits_redis")
LABELS = {
    "upstream": "upstream direct",
    "reference": "reference aiohttp proxy",
    "gateway": "passerelle (metering on)",
    "cache_miss": "passerelle (exact cache on, every request a miss)",
    "cache_hit": "passerelle (exact cache on, every request a hit)",
    "semantic_miss": "passerelle (exact + semantic cache on, every request a miss)",
    "semantic_hit": "passerelle (exact + semantic cache on, every request a semantic hit)",
    "routing": "passerelle (learned route)",
    "limits": "passerelle (budgets + rate limits)",
    "limits_redis": "passerelle (budgets + rate limits, Redis)",
}
KEY_ENV = "BENCH_TENANT_KEY"
# never refuses, yet every rule is checked, reserved and settled on every request
BIG_BUDGET_USD = 1_000_000
RPM = 10_000_000
TPM = 10_000_000_000


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


def limits_config(upstream_url: str, tenant: str, redis_url: str | None = None) -> dict[str, Any]:
    """The gateway's configuration with one tenant under budgets and rate limits."""
    tenants = [
        {
            "name": tenant,
            "keys": [
                {
                    "key": f"env:{KEY_ENV}",
                    "name": "bench",
                    "budgets": [{"usd": BIG_BUDGET_USD, "period": "day"}],
                }
            ],
            "budgets": [
                {"usd": BIG_BUDGET_USD, "period": "month"},
                # a feature the benchmark's requests never name: filtered out at admission
                {"usd": 1000, "period": "day", "feature": "summarize"},
            ],
            "rate_limits": {"rpm": RPM, "tpm": TPM},
        }
    ]
    overrides: dict[str, Any] = {"tenants": tenants}
    if redis_url:
        overrides["redis"] = redis_url
    return fake_upstream_config(upstream_url, **overrides)


def redis_client(url: str) -> Any:
    """A synchronous Redis client, or None when Redis cannot be reached."""
    try:
        import redis
    except ImportError:
        return None
    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return None
    return client


def redis_pid(client: Any) -> int | None:
    """The redis-server's pid, where this machine's /proc shows it (same host, same namespace)."""
    try:
        pid = int(client.info("server")["process_id"])
        with open(f"/proc/{pid}/comm") as f:
            if "redis" not in f.read():
                return None
    except (OSError, KeyError, ValueError):
        return None
    return pid


def redis_script_stats(client: Any) -> tuple[int, int]:
    """Calls and microseconds of EVALSHA/EVAL so far (INFO commandstats)."""
    stats = client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        if name in stats:
            calls += int(stats[name]["calls"])
            usec += int(stats[name]["usec"])
    return calls, usec


def redis_keys(client: Any, tenant: str, key_id: str) -> list[str]:
    """This run's counters in Redis: everything named after its tenant or its key."""
    found: set[str] = set()
    for pattern in (f"passerelle:*:{tenant}:*", f"passerelle:*:{key_id}:*"):
        found.update(k.decode() for k in client.scan_iter(match=pattern, count=1000))
    return sorted(found)


def redis_counter_check(client: Any, tenant: str, key_id: str) -> dict[str, Any]:
    """The budget hashes of this run: what they hold once every request has been answered."""
    out: dict[str, Any] = {}
    for k in redis_keys(client, tenant, key_id):
        if k.startswith("passerelle:budget:") and not k.endswith(":holds"):
            h = {a.decode(): int(b) for a, b in client.hgetall(k).items()}
            out[k] = {
                "spent_usd": h.get("spent", 0) / 1e9,
                "reserved_nano": h.get("reserved", 0),
                "holds": client.zcard(k + ":holds"),
            }
        elif k.startswith("passerelle:rate:") and k.endswith(":total"):
            out[k] = {"window_total": int(client.get(k) or 0)}
        elif k.startswith("passerelle:rate:"):
            out[k] = {"window_entries": client.zcard(k)}
    return out


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
    # the Redis server, when the run watches it: CPU per request (schedstat, then utime+stime),
    # cores it kept busy (other clients' work too, on the runs that do not use it), and the
    # scripts (EVALSHA) it ran per request with their CPU inside Redis
    redis_cpu_ms: float | None = None
    redis_cpu_stat_ms: float | None = None
    redis_load: float | None = None
    redis_scripts_per_request: float | None = None
    redis_script_us_per_request: float | None = None
    # requests this target was sent in the 60 s before the middle of the run: what the rate
    # limits' one-minute sliding windows held on average during the run (warm-ups included)
    window_requests: int | None = None


@dataclass
class Target:
    name: str
    base_url: str
    headers: dict[str, str]
    pid: int | None  # the proxy process; None for the direct upstream
    sent: int = 0
    uses_redis: bool = False
    spans: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, requests)

    def sent_between(self, since: float, until: float) -> int:
        """Requests sent in a span of time, taking each run's requests as spread evenly over it."""
        total = 0.0
        for start, end, n in self.spans:
            lo, hi = max(start, since), min(end, until)
            if hi > lo and end > start:
                total += n * (hi - lo) / (end - start)
        return round(total)


@dataclass
class RedisProbe:
    client: Any
    pid: int | None  # None: not visible in this machine's /proc


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


_unique = itertools.count()


def _spaced(i: int) -> str:
    """`` in one short sentence`` with one to three spaces between words as the digits of ``i``
    in base 3 say: a prompt the exact cache never saw, the same words for the semantic one."""
    words = ["", "please", ",", "in", "one", "short", "and", "polite", "sentence", ",", "thanks"]
    out = []
    for word in words:
        out.append(" " * (i % 3 + 1) + word)
        i //= 3
    return "".join(out)


def request_body(stream: bool, target: str = "gateway") -> bytes:
    """The request every target is sent; through the cache at temperature 0 (or it would not be
    cached), and for ``cache_miss`` with a number no earlier request had, so none is a hit."""
    extra: dict[str, Any] = {"temperature": 0} if target in CACHED else {}
    n = f" ({next(_unique)})" if target in FRESH else ""
    if target == "semantic_hit":  # the same words, spaced apart anew: an exact miss every time
        n = _spaced(next(_unique))
    if stream:
        return orjson.dumps(
            {
                "model": MODEL,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [
                    {"role": "user", "content": f"Count for me{n}. #words:{STREAM_WORDS}"}
                ],
                **extra,
            }
        )
    return orjson.dumps(
        {
            "model": MODEL,
            "max_tokens": 32,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"Say hello in one short sentence{n}."},
            ],
            **extra,
        }
    )


async def drive(
    session: aiohttp.ClientSession, target: Target, n: int, concurrency: int, stream: bool
) -> tuple[float, list[float], int, str | None]:
    url = target.base_url + "/chat/completions"
    body = request_body(stream, target.name)
    fresh = target.name in FRESH or target.name == "semantic_hit"  # a body of its own each
    headers = {"Content-Type": "application/json", **target.headers}
    todo = iter(range(n))
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal errors, first_error
        for _ in todo:
            data = request_body(stream, target.name) if fresh else body
            t0 = clock()
            try:
                async with session.post(url, data=data, headers=headers) as resp:
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
    target.spans.append((t0, t0 + elapsed, n))
    return elapsed, latencies, errors, first_error


async def measure(
    session: aiohttp.ClientSession,
    target: Target,
    upstream_pid: int,
    n: int,
    concurrency: int,
    stream: bool,
    round_no: int,
    redis: RedisProbe | None = None,
) -> Run:
    me = os.getpid()
    rpid = redis.pid if redis else None

    def snapshot() -> tuple[int, ...]:
        return (
            cpu_ns(target.pid) if target.pid else 0,
            cpu_stat_ns(target.pid) if target.pid else 0,
            cpu_ns(upstream_pid),
            cpu_ns(me),
            *machine_busy_ns(),
            cpu_ns(rpid) if rpid else 0,
            cpu_stat_ns(rpid) if rpid else 0,
        )

    scripts = redis.client if redis is not None and target.uses_redis else None
    watch_scripts = scripts is not None
    scripts_before = redis_script_stats(scripts) if scripts is not None else (0, 0)
    before = snapshot()
    elapsed, latencies, errors, first_error = await drive(session, target, n, concurrency, stream)
    after = snapshot()
    scripts_after = redis_script_stats(scripts) if scripts is not None else (0, 0)
    delta = [a - b for a, b in zip(after, before, strict=True)]
    per = [d / 1e6 / n for d in delta]
    start, end, _ = target.spans[-1]
    mid = (start + end) / 2
    ours = delta[0] + delta[2] + delta[3] + (delta[6] if target.uses_redis else 0)
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
        redis_cpu_ms=per[6] if rpid and target.uses_redis else None,
        redis_cpu_stat_ms=per[7] if rpid and target.uses_redis else None,
        redis_load=delta[6] / 1e9 / elapsed if rpid else None,
        redis_scripts_per_request=(
            (scripts_after[0] - scripts_before[0]) / n if watch_scripts else None
        ),
        redis_script_us_per_request=(
            (scripts_after[1] - scripts_before[1]) / n if watch_scripts else None
        ),
        window_requests=target.sent_between(mid - 60.0, mid),
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


def requests_for(args: argparse.Namespace, name: str, stream: bool) -> int:
    """Requests per round: fewer through the limit variants, whose cost grows with the load."""
    if name in LIMIT_VARIANTS:
        return int(args.limits_stream_requests if stream else args.limits_requests)
    return int(args.stream_requests if stream else args.requests)


def plan(targets: dict[str, Target], stream_all: bool) -> list[tuple[str, str]]:
    """(kind, target) in the order of a round: all plain runs, then the streaming ones."""
    out = [("plain", name) for name in TARGETS if name in targets]
    streamed = TARGETS if stream_all else ("upstream", "reference", "gateway", *CACHED)
    return out + [("stream", name) for name in streamed if name in targets]


async def benchmark(
    args: argparse.Namespace,
    targets: dict[str, Target],
    upstream_pid: int,
    redis: RedisProbe | None = None,
) -> list[Run]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    runs: list[Run] = []
    order = plan(targets, args.stream_all)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as session:
        # connections, imports, caches, the ledger's first batches, the counters' first periods
        for kind, name in order:
            stream = kind == "stream"
            n = max(50 if stream else 200, requests_for(args, name, stream) // 5)
            await drive(session, targets[name], n, args.concurrency, stream)
        for r in range(args.rounds):
            for kind, name in order:
                stream = kind == "stream"
                n = requests_for(args, name, stream)
                run = await measure(
                    session, targets[name], upstream_pid, n, args.concurrency, stream, r, redis
                )
                runs.append(run)
                print(
                    f"  round {r + 1}/{args.rounds} {run.kind:6} {name:12} "
                    f"{run.rps:7.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                    f"p99 {run.p99_ms:6.2f} ms  "
                    + (f"cpu {run.proxy_cpu_ms:.3f} ms/req" if run.proxy_cpu_ms else "")
                    + (f" + redis {run.redis_cpu_ms:.3f}" if run.redis_cpu_ms is not None else "")
                    + (
                        f"  window {run.window_requests:,}"
                        if name in LIMIT_VARIANTS and run.window_requests
                        else ""
                    )
                    + (f"  other load {run.other_load:.2f} cores" if run.other_load > 0.1 else "")
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


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares y = a + b x; None without two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def window_fit(rs: list[Run], attr: str) -> dict[str, float] | None:
    """CPU per request against what the rate windows held: at an empty window, per 1,000 more."""
    points = [
        (float(x.window_requests), float(getattr(x, attr)))
        for x in rs
        if x.window_requests is not None and getattr(x, attr) is not None
    ]
    line = fit(points)
    if line is None:
        return None
    return {"empty_window_ms": line[0], "per_1000_requests_ms": line[1] * 1000}


def present(runs: list[Run]) -> list[tuple[str, str]]:
    """(kind, target) pairs that were measured, in table order."""
    seen = {(x.kind, x.target) for x in runs}
    return [(k, n) for k in ("plain", "stream") for n in TARGETS if (k, n) in seen]


def summarise(runs: list[Run]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, name in present(runs):
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
            "redis_cpu_ms": med([x.redis_cpu_ms for x in rs]),
            "redis_cpu_stat_ms": med([x.redis_cpu_stat_ms for x in rs]),
            "redis_load": med([x.redis_load for x in rs]),
            "redis_scripts_per_request": med([x.redis_scripts_per_request for x in rs]),
            "redis_script_us_per_request": med([x.redis_script_us_per_request for x in rs]),
            "window_requests": med([x.window_requests for x in rs]),
            "window_requests_max": max((x.window_requests or 0) for x in rs),
            "window_requests_min": min((x.window_requests or 0) for x in rs),
            "proxy_cpu_window_fit": window_fit(rs, "proxy_cpu_ms")
            if name in LIMIT_VARIANTS
            else None,
            "redis_cpu_window_fit": window_fit(rs, "redis_cpu_ms")
            if name in LIMIT_VARIANTS
            else None,
        }
    for kind, name in present(runs):
        ref = out[f"{kind}/reference"]["proxy_cpu_ms"]
        row = out[f"{kind}/{name}"]
        cpu = row["proxy_cpu_ms"]
        row["cpu_ratio"] = cpu / ref if cpu is not None and ref else None
        # counting the Redis server's CPU too (the Redis variant only)
        rcpu = row["redis_cpu_ms"]
        row["cpu_ratio_with_redis"] = (
            (cpu + rcpu) / ref if cpu is not None and rcpu is not None and ref else None
        )
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
        "| CPU vs reference | Redis CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.values():
        name = row["target"]
        label = LABELS[name]
        if row["kind"] == "stream":
            label += f", streaming ({STREAM_WORDS + 3} events)"
        added = (
            "—"
            if name == "upstream"
            else (f"{fmt(row['added_p50_ms'], sign=True)} / {fmt(row['added_p99_ms'], sign=True)}")
        )
        ratio = "—" if row["cpu_ratio"] is None else f"{row['cpu_ratio']:.1f}×"
        lines.append(
            f"| {label} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {added} | {fmt(row['proxy_cpu_ms'], '.3f')} | {ratio} "
            f"| {fmt(row['redis_cpu_ms'], '.3f')} |"
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
    p.add_argument(
        "--stream-all",
        action="store_true",
        help="stream through the budget and rate-limit variants too, not only the plain gateway",
    )
    p.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        metavar="URL",
        help="Redis of the budgets + rate limits, Redis variant",
    )
    p.add_argument("--no-redis", action="store_true", help="skip the Redis variant")
    p.add_argument(
        "--limits-requests",
        type=int,
        default=1000,
        help="non-streaming requests per round through each budget and rate-limit variant",
    )
    p.add_argument(
        "--limits-stream-requests",
        type=int,
        default=200,
        help="streaming requests per round through each variant (with --stream-all)",
    )
    return p.parse_args(argv)


@dataclass
class Gateways:
    """The gateway processes under test, with what tells their requests apart."""

    procs: dict[str, GatewayProcess] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # target -> tenant key


def routing_config(upstream_url: str, workdir: Path) -> dict[str, Any]:
    """The plain gateway's configuration with the benchmark's model name served by a learned
    route over two models, its artefact trained here (the shipped 4,096 buckets) on synthetic
    outcomes: every request pays for the features, the prediction and the choice."""
    config = fake_upstream_config(upstream_url)
    models = config["models"]
    base = next(m for m in models if m["name"] == MODEL)
    models.remove(base)
    for name, usd in (("cheap", 0.15), ("dear", 2.5)):
        target = {**base["targets"][0], "price": {"input": usd, "output": usd * 4}}
        models.append({"name": f"{MODEL}-{name}", "targets": [target]})
    words = ["hello", "sentence", "short", "prove", "theorem", "count", "terse", "explain"]
    rows = []
    for i in range(200):
        prompt = " ".join(words[(i * k) % len(words)] for k in range(1, 12))
        hard = i % 3 == 0
        rows.append(Outcome(prompt, f"{MODEL}-cheap", 0.0 if hard else 1.0, 0.0001))
        rows.append(Outcome(prompt, f"{MODEL}-dear", 1.0, 0.002))
    workdir.mkdir(parents=True, exist_ok=True)
    train(rows, hashing=Hashing()).save(workdir / "router.npz")
    config["routes"] = [
        {
            "name": MODEL,
            "strategy": "learned",
            "router": "router.npz",
            "models": [f"{MODEL}-dear", f"{MODEL}-cheap"],
        }
    ]
    return config


def start_gateways(
    tmp: Path, upstream_url: str, run_id: str, redis_url: str | None, gws: Gateways
) -> None:
    gws.procs["gateway"] = GatewayProcess(tmp / "gateway", fake_upstream_config(upstream_url))
    gws.keys["gateway"] = TENANT_KEYS["acme"]
    for name in CACHED:
        cache: dict[str, Any] = {"exact": {"ttl_s": 3600}}
        if name in SEMANTIC:
            cache["semantic"] = {"models": [MODEL]}
        config = fake_upstream_config(upstream_url, cache=cache)
        gws.procs[name] = GatewayProcess(tmp / name, config)
        gws.keys[name] = TENANT_KEYS["acme"]
    gws.procs["routing"] = GatewayProcess(
        tmp / "routing", routing_config(upstream_url, tmp / "routing")
    )
    gws.keys["routing"] = TENANT_KEYS["acme"]
    variants: dict[str, str | None] = {"limits": None}
    if redis_url:
        variants["limits_redis"] = redis_url
    for name, url in variants.items():
        # a tenant and key of their own per run: Redis counters never meet an earlier run's
        tenant, key = f"bench-{run_id}-{name}", f"sk-bench-{run_id}-{name}"
        gws.procs[name] = GatewayProcess(
            tmp / name, limits_config(upstream_url, tenant, url), env={KEY_ENV: key}
        )
        gws.keys[name] = key
    for proc in gws.procs.values():
        proc.start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = os.sched_getaffinity(0)
    can_pin = not args.no_pin and {PROXY_CORE, LOAD_CORE} <= cores
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:10]
    redis_note = ""
    redis: RedisProbe | None = None
    if not args.no_redis:
        client = redis_client(args.redis)
        if client is None:
            redis_note = f"Redis variant skipped: {args.redis} cannot be reached."
            print(f"warning: {redis_note}", file=sys.stderr)
        else:
            redis = RedisProbe(client, redis_pid(client))
            if redis.pid is None:
                print(
                    "warning: the redis-server process is not visible here: "
                    "its CPU is not measured",
                    file=sys.stderr,
                )
    redis_tenant, redis_key = f"bench-{run_id}-limits_redis", f"sk-bench-{run_id}-limits_redis"
    redis_key_id = key_id_for(key_digest(redis_key))  # names its key budget's counter
    counters: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="passerelle-bench-") as tmp:
        upstream = UpstreamProcess()
        reference: ReferenceProcess | None = None
        gws = Gateways()
        try:
            upstream.start()
            reference = ReferenceProcess(upstream.url)
            reference.start()
            start_gateways(Path(tmp), upstream.url, run_id, args.redis if redis else None, gws)
            assert upstream.process and reference.process
            pids = {"upstream": upstream.process.pid, "reference": reference.process.pid}
            for name, proc in gws.procs.items():
                assert proc.process
                pids[name] = proc.process.pid
            if can_pin:
                ok = pin(os.getpid(), {LOAD_CORE}) and pin(pids["upstream"], {LOAD_CORE})
                for name in ("reference", *gws.procs):
                    ok = pin(pids[name], {PROXY_CORE}) and ok
                if not ok:
                    print("warning: some threads could not be pinned", file=sys.stderr)
            upstream_auth = {"Authorization": "Bearer sk-upstream"}
            targets = {
                "upstream": Target("upstream", upstream.base_url, upstream_auth, None),
                "reference": Target(
                    "reference", reference.base_url, upstream_auth, pids["reference"]
                ),
            }
            for name, proc in gws.procs.items():
                targets[name] = Target(
                    name,
                    proc.base_url,
                    {"Authorization": f"Bearer {gws.keys[name]}"},
                    pids[name],
                    uses_redis=name == "limits_redis",
                )
            print(
                f"upstream {upstream.url}  reference {reference.url}  "
                + "  ".join(f"{n} {p.url}" for n, p in gws.procs.items()),
                file=sys.stderr,
            )
            runs = asyncio.run(benchmark(args, targets, pids["upstream"], redis))
            usages = {name: asyncio.run(usage_totals(p.url)) for name, p in gws.procs.items()}
            if redis and "limits_redis" in gws.procs:
                counters = redis_counter_check(redis.client, redis_tenant, redis_key_id)
            affinity = {k: sorted(pinned_to(pid)) for k, pid in pids.items()}
            rss = {k: rss_mib(pid) for k, pid in pids.items()}
        finally:
            servers: list[ServerProcess | None] = [*gws.procs.values(), reference, upstream]
            for server in servers:
                if server is not None:
                    server.stop()
            if redis:
                with contextlib.suppress(Exception):
                    stale = redis_keys(redis.client, redis_tenant, redis_key_id)
                    if stale:
                        redis.client.delete(*stale)
        stderrs = {name: p.stderr() for name, p in gws.procs.items()}

    summary = summarise(runs)
    info = machine(can_pin)
    if redis:
        info["redis"] = {
            "url": args.redis,
            "pid": redis.pid,
            "version": redis.client.info("server").get("redis_version"),
            "cores": sorted(pinned_to(redis.pid)) if redis.pid else None,
        }
    failed = sum(x.errors for x in runs)
    gateways = [name for name in GATEWAYS if name in gws.procs]

    print()
    print(table(summary, args))
    print()
    print(
        f"Machine: {info['nproc']} cores ({info['cpu'] or 'unknown CPU'}), Python "
        f"{info['python']}, aiohttp {info['aiohttp']}, Linux {info['kernel']}; "
        f"passerelle {info['passerelle']}"
        + (f"; Redis {info['redis']['version']}" if redis else "")
        + ". "
        + (
            f"Proxies under test pinned to core {PROXY_CORE}, one under load at a time; load "
            f"generator and upstream to core {LOAD_CORE}"
            + (
                f"; Redis not pinned (cores {info['redis']['cores']})"
                if redis and info["redis"]["cores"]
                else ""
            )
            + f" (checked: {affinity})."
            if can_pin
            else "Not pinned."
        )
    )
    streamed = (
        "every target"
        if args.stream_all
        else "upstream, reference, plain gateway and the cache variants only"
    )
    print(
        f"Load: {args.concurrency} concurrent keep-alive workers; {args.requests} requests "
        f"(streaming: {args.stream_requests}; {streamed}) per target per round, "
        f"{args.limits_requests} through each budget and rate-limit variant"
        + (f" (streaming: {args.limits_stream_requests})" if args.stream_all else "")
        + f"; {args.rounds} interleaved rounds, medians shown. CPU = all threads of the proxy "
        "process, per request."
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
            if "plain/" + name in summary
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
    base = summary["plain/gateway"]["proxy_cpu_ms"]
    for name in LIMIT_VARIANTS:
        row = summary.get("plain/" + name)
        if row is None:
            continue
        line = (
            f"{LABELS[name]}: {fmt(row['cpu_ratio'], '.2f')}× the reference (round by round "
            f"{fmt(row['cpu_ratio_per_round'], '.2f')}×), "
            f"{fmt(row['proxy_cpu_ms'] - base if base else None, '+.3f')} ms per request over "
            f"the plain gateway (rounds: {fmt(row['proxy_cpu_ms_min'], '.3f')}–"
            f"{fmt(row['proxy_cpu_ms_max'], '.3f')} ms); the rate limits' one-minute windows "
            f"held {row['window_requests_min']:,}–{row['window_requests_max']:,} requests "
            f"(median {row['window_requests']:,.0f})"
        )
        for who, key in (("gateway", "proxy_cpu_window_fit"), ("Redis", "redis_cpu_window_fit")):
            f = row[key]
            if f is not None:
                empty = f["empty_window_ms"]
                line += (
                    f"; {who} CPU per request, fitted over the rounds: "
                    f"{f['per_1000_requests_ms']:+.3f} ms per 1,000 requests in the window, "
                    + (f"{empty:.3f} ms" if empty >= 0.0005 else "≈ 0")
                    + " at an empty one"
                )
        if name == "limits_redis":
            if row["redis_cpu_ms"] is not None:
                line += (
                    f"; Redis server {row['redis_cpu_ms']:.3f} ms CPU per request "
                    f"(utime+stime {fmt(row['redis_cpu_stat_ms'], '.3f')}), gateway + Redis "
                    f"{row['proxy_cpu_ms'] + row['redis_cpu_ms']:.3f} ms = "
                    f"{fmt(row['cpu_ratio_with_redis'], '.2f')}× the reference"
                )
            else:
                line += "; Redis server CPU not measured (process not visible)"
            line += (
                f"; {fmt(row['redis_scripts_per_request'], '.2f')} scripts per request, "
                f"{fmt(row['redis_script_us_per_request'], '.1f')} µs of them inside Redis"
            )
        print(line + ".")
    others = [x.redis_load for x in runs if x.redis_load is not None and x.target != "limits_redis"]
    if others:
        print(
            "Redis server busy during the other runs (other clients, its own timers): median "
            f"{statistics.median(others):.3f} cores (max {max(others):.3f})."
        )
    if redis_note:
        print(redis_note)
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
    status = 0
    ledger: dict[str, Any] = {}
    for name in gateways:
        usage, sent = usages[name], targets[name].sent
        rows = int(usage["totals"]["requests"])
        by_status = {d["status"]: d["requests"] for d in usage["data"]}
        ledger[name] = {"rows": rows, "sent": sent, "by_status": by_status, **usage["totals"]}
        print(
            f"Ledger of {LABELS[name]}: {rows} rows for {sent} requests sent ({by_status}); "
            f"total cost ${usage['totals']['cost_usd']}, "
            f"unpriced {usage['totals']['unpriced_requests']}."
        )
        if rows != sent or by_status.get("ok") != sent:
            print(
                f"\n!!! LEDGER MISMATCH ({name}): {rows} rows ({by_status}) for {sent} requests "
                "sent !!!\n",
                file=sys.stderr,
            )
            status = 1
    if counters:
        budgets = {k: v for k, v in counters.items() if "reserved_nano" in v}
        held = {k: v for k, v in budgets.items() if v["reserved_nano"] or v["holds"]}
        spent = ", ".join(
            f"{k.split(':')[2]} {k.split(':')[-1]} ${v['spent_usd']:.6f}"
            for k, v in budgets.items()
        )
        windows = ", ".join(
            f"{k.rsplit(':', 1)[1]} {v['window_entries']:,}"
            for k, v in counters.items()
            if "window_entries" in v
        )
        print(
            f"Redis counters after the run: spent {spent} (ledger "
            f"${ledger['limits_redis']['cost_usd']}; the feature budget does not apply); "
            f"{'none' if not held else len(held)} still holding reservations; window entries "
            f"{windows}; deleted afterwards."
        )
        if held:
            print(f"\n!!! REDIS RESERVATIONS LEFT OVER: {held} !!!\n", file=sys.stderr)
            status = 1
    if failed:
        firsts = {f"{x.kind}/{x.target}": x.first_error for x in runs if x.first_error}
        print(f"\n!!! {failed} REQUESTS FAILED: {firsts} !!!\n", file=sys.stderr)
        status = 1
    if status:
        for name, text in stderrs.items():
            if text:
                print(f"{name} stderr (tail):\n" + text[-3000:], file=sys.stderr)
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
                    "ledger": ledger,
                    "redis_counters": counters,
                    "summary": summary,
                    "runs": [asdict(x) for x in runs],
                },
                indent=2,
                default=str,
            )
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
