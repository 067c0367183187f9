"""The crash battery, fast: a few SIGKILLs under load, then SIGTERM with streams in flight.

The long version (fifty kills and more, on SQLite and on PostgreSQL + Redis) is
``bench/crash.py``; both drive ``crash_harness.py``. What must hold after every run: each answer
a client received whole is in the ledger exactly once, each call the upstream saw has its rows (or
was reconciled as ``interrupted`` at the restart), no request has two call rows, SIGTERM lets the
streams in flight finish and exits cleanly, no journal is left behind, and on Redis no
reservation is left held and the budget never counts less than the ledger.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fakes.upstream import UpstreamProcess
from tests.integration.crash_harness import Figures, run


def assert_exact(f: Figures, kills: int) -> None:
    assert f.kills == kills
    assert f.completed > 0 and f.upstream_calls > 0
    assert f.interrupted > 0, "every kill lands with calls in flight: some must be reconciled"
    assert f.completed_missing == 0, f
    assert f.duplicates == 0, f
    assert f.upstream_unaccounted == 0 and f.attempts_unaccounted == 0, f
    assert (f.sigterm_finished, f.sigterm_exit) == (f.sigterm_in_flight, 0), f
    assert f.journals_left == 0 and f.holds_left == 0, f
    assert f.spent_gap_nano >= 0, f  # Redis never counts less than the ledger holds


def test_sigkill_under_load_on_sqlite_keeps_the_books_exact(
    fresh_upstream: UpstreamProcess, tmp_path: Path
) -> None:
    figures = asyncio.run(run(fresh_upstream, tmp_path / "gw", kills=3, concurrency=20))
    assert_exact(figures, 3)


def test_sigkill_under_load_on_postgres_and_redis_keeps_the_books_exact(
    fresh_upstream: UpstreamProcess, tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    figures = asyncio.run(
        run(
            fresh_upstream,
            tmp_path / "gw",
            kills=2,
            store=postgres_url,
            redis=redis_url,
            concurrency=20,
        )
    )
    assert_exact(figures, 2)
