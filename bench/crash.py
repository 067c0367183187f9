"""The crash battery, long: fifty SIGKILLs and more under load, on SQLite and on PostgreSQL + Redis.

    .venv/bin/python bench/crash.py [--kills N] [--concurrency C] [--postgres URL] [--redis URL]

For each store, one gateway (a tenant with a hard budget, so every call holds a reservation) takes
load from C concurrent clients: plain answers and streams, latencies of 0-400 ms, one call in
twenty failing upstream and retried. N times it is killed with SIGKILL at a random instant and
restarted on the same data directory (which reconciles what the dead process left in flight);
then it is stopped with SIGTERM while ten slow streams are in flight. The books are then read
back (``tests/integration/crash_harness.py`` says how) and printed:

- answers received whole, and how many of them are not in the ledger exactly once (must be 0);
- requests with two call rows (must be 0);
- calls the upstream saw, and how many have no row or fewer attempt rows than attempts (must be
  0): ``interrupted`` rows are the calls reconciled at a restart, charged at their worst case;
- SIGTERM: streams in flight, finished, exit status; journals left; Redis holds left (must be 0);
  Redis ``spent`` minus the ledger's total (must not be negative; above 0 by the cost of calls
  killed after their settlement reached Redis and before their end was journaled, which the
  restart settles again);
- restart time (median, max), reconciliation included.

Exit status 1 when any "must be 0" is not. PostgreSQL + Redis is skipped, with a note, when either
cannot be reached (``--no-postgres`` skips it anyway). Never part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.upstream import UpstreamProcess
from tests.integration.crash_harness import Figures, run


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def show(name: str, f: Figures, wall_s: float) -> None:
    rows = [
        ("kills (SIGKILL)", f.kills),
        ("requests sent", f.sent),
        ("answers received whole", f.completed),
        ("  not in the ledger exactly once", f.completed_missing),
        ("requests with two call rows", f.duplicates),
        ("calls the upstream saw", f.upstream_calls),
        ("  with no row", f.upstream_unaccounted),
        ("  with fewer attempt rows than attempts", f.attempts_unaccounted),
        ("interrupted rows (reconciled at restart)", f.interrupted),
        ("failed-attempt rows", f.attempt_rows),
        ("SIGTERM: streams in flight / finished", f"{f.sigterm_in_flight} / {f.sigterm_finished}"),
        ("SIGTERM: exit status", f.sigterm_exit),
        ("journals left", f.journals_left),
        ("Redis holds left", f.holds_left),
        ("Redis spent minus ledger, nano-USD (>= 0)", f.spent_gap_nano),
        (
            "restart s (median / max)",
            f"{statistics.median(f.restart_s):.2f} / {max(f.restart_s):.2f}"
            if f.restart_s
            else "-",
        ),
        ("wall s", f"{wall_s:.0f}"),
        ("books exact", "yes" if f.exact else "NO"),
    ]
    print(f"\n{name}")
    for label, value in rows:
        print(f"  {label:<44} {value}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    window = (0.1, 0.6)
    exact = True
    with UpstreamProcess() as upstream, tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            t0 = time.monotonic()
            f = asyncio.run(
                run(
                    upstream,
                    Path(tmp) / "sqlite",
                    args.kills,
                    concurrency=args.concurrency,
                    seed=args.seed,
                    window_s=window,
                )
            )
            show("SQLite", f, time.monotonic() - t0)
            exact &= f.exact
        if args.no_postgres:
            pass
        elif not (reachable(args.postgres, 5432) and reachable(args.redis, 6379)):
            print("\nPostgreSQL + Redis: skipped (not reachable)")
        else:
            t0 = time.monotonic()
            f = asyncio.run(
                run(
                    upstream,
                    Path(tmp) / "postgres",
                    args.kills,
                    store=args.postgres,
                    redis=args.redis,
                    concurrency=args.concurrency,
                    seed=args.seed,
                    window_s=window,
                )
            )
            show("PostgreSQL + Redis", f, time.monotonic() - t0)
            exact &= f.exact
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
