"""The embedded ledger: SQLite in WAL mode, written by one thread in batches.

Requests hand their record to a bounded queue and await their batch's commit: nobody waits on an
insert of their own, and nobody is answered before their row is durable. The handoff is cheap on
the event loop's side: a lock-free queue, a plain asyncio future per record, and one wake-up of
the loop per committed batch that answers every record in it. With WAL and
``synchronous=NORMAL`` a committed transaction survives a process crash (SIGKILL); only a power cut
can lose the last ones. A locked or failing file is retried with backoff while callers wait. A
batch SQLite refuses for what it holds is retried row by row, so one bad row never drops its
neighbours; that row goes to the dead-letter file (``store/deadletter.py``). ``close`` drains the
queue before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from passerelle.errors import StoreError
from passerelle.store.base import Ledger
from passerelle.store.deadletter import DeadLetters
from passerelle.store.migrations import migrate_sqlite
from passerelle.store.outcomes import OutcomeQueries
from passerelle.store.records import RevenueEntry, UsageRecord, UsageRow, row_of
from passerelle.store.savings import SavingsRow, savings_rows, savings_sql
from passerelle.store.sql import (
    MAX_BATCH,
    QUEUE_SIZE,
    SELECT_REVENUE,
    find_key_sql,
    insert_key_sql,
    insert_sql,
    key_row,
    list_keys_sql,
    record_of,
    records_sql,
    revenue_of,
    revenue_row,
    upsert_revenue_sql,
    usage_rows,
    usage_sql,
)
from passerelle.tenancy import ApiKey

log = logging.getLogger("passerelle.store")

_STOP = object()
FULL_WAIT_S = 0.005
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
UNREACHABLE_AFTER_S = 15.0


_Pending = tuple[Any, "asyncio.Future[None]", asyncio.AbstractEventLoop]  # row, answer, its loop
_Outcome = tuple["asyncio.Future[None]", BaseException | None]


class _UnreachableError(Exception):
    """The file stayed unwritable past ``unreachable_after_s``."""


class SQLiteLedger(OutcomeQueries, Ledger):
    def __init__(
        self,
        path: str,
        *,
        dead_letters: Path | None = None,
        unreachable_after_s: float = UNREACHABLE_AFTER_S,
    ) -> None:
        """``dead_letters``: where rows SQLite refuses are kept. ``unreachable_after_s``: how
        long a write retries a locked or failing file before its callers fail."""
        self.path = Path(path)
        self.dead_letters = DeadLetters(dead_letters)
        self.unreachable_after_s = unreachable_after_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # bounded by ``record``
        self._thread: threading.Thread | None = None
        self._checkpoints: threading.Thread | None = None
        self._stopped = threading.Event()
        self._insert = insert_sql("?")
        self.commits = 0  # batches committed in one transaction each (batching is observable)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _checkpointer(self) -> None:
        """Checkpoints the WAL every second from its own thread and connection, so that no
        commit a request waits on pays for one (SQLite's auto-checkpoint runs inside commits)."""
        conn = self._connect()
        try:
            while not self._stopped.wait(1.0):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("ledger checkpoint failed: %s", exc)
        finally:
            conn.close()

    async def start(self) -> None:
        if self._thread is not None:
            return
        await asyncio.to_thread(self._migrate)
        self._stopped.clear()
        self._thread = threading.Thread(target=self._writer, name="ledger-writer", daemon=True)
        self._thread.start()
        self._checkpoints = threading.Thread(
            target=self._checkpointer, name="ledger-checkpoint", daemon=True
        )
        self._checkpoints.start()

    def _migrate(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open ledger {self.path}: {exc}") from exc
        try:
            migrate_sqlite(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot migrate ledger {self.path}: {exc}") from exc
        finally:
            conn.close()

    async def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._stopped.set()
        if self._checkpoints is not None:
            await asyncio.to_thread(self._checkpoints.join)
            self._checkpoints = None

    async def record(self, record: UsageRecord) -> None:
        if self._thread is None:
            raise StoreError("ledger is not started")
        loop = asyncio.get_running_loop()
        while self._queue.qsize() >= QUEUE_SIZE:  # the writer is behind: wait for room
            await asyncio.sleep(FULL_WAIT_S)
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put((row_of(record), fut, loop))
        await fut

    # the writer thread -------------------------------------------------------------------
    def _writer(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpointer
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch = []
            if item is _STOP:
                stopping = True
            else:
                batch.append(item)
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                self._commit(conn, batch)
        conn.close()

    # Exception, not only sqlite3.Error, below: an int out of range raises OverflowError, an odd
    # type raises TypeError, and either must not kill the writer (every later record would wait
    # forever).
    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        outcomes: list[tuple[asyncio.Future[None], BaseException | None]] = []
        try:
            self._retrying(conn, [row for row, _, _ in batch])
        except _UnreachableError as exc:
            outcomes = [(fut, StoreError(f"ledger unwritable: {exc}")) for _, fut, _ in batch]
        except Exception:  # a row the database refuses: find it, keep its neighbours
            for row, fut, _ in batch:
                try:
                    self._retrying(conn, [row])
                except _UnreachableError as exc:
                    outcomes.append((fut, StoreError(f"ledger unwritable: {exc}")))
                except Exception as exc:
                    self.dead_letters.keep(row, exc)
                    outcomes.append((fut, StoreError(f"ledger rejected record: {exc}")))
                else:
                    self.commits += 1
                    outcomes.append((fut, None))
        else:
            self.commits += 1
            outcomes = [(fut, None) for _, fut, _ in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for (_, _, loop), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, answers in by_loop.items():  # one wake-up of each loop per batch
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle_all, answers)

    def _retrying(self, conn: sqlite3.Connection, rows: list[Any]) -> None:
        """The rows in one transaction. ``OperationalError`` (locked, busy, disk I/O, disk
        full) is the file's state, not the rows' fault: retried with backoff for
        ``unreachable_after_s``, then ``_UnreachableError``. Anything else is raised at once."""
        deadline = time.monotonic() + self.unreachable_after_s
        delay = RETRY_FIRST_S
        while True:
            try:
                conn.execute("BEGIN")
                conn.executemany(self._insert, rows)
                conn.execute("COMMIT")
                return
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if not isinstance(exc, sqlite3.OperationalError):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _UnreachableError(f"{type(exc).__name__}: {exc}") from exc
                log.warning("ledger write of %d row(s) failed (%s); retrying", len(rows), exc)
                self._stopped.wait(min(delay, left))
                delay = min(delay * 2, RETRY_MAX_S)

    # reads ---------------------------------------------------------------------------------
    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            conn = self._connect()
            try:
                return list(conn.execute(sql, params).fetchall())
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreError(f"ledger read failed: {exc}") from exc

    async def _write(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """``sql`` once per row, in one transaction."""

        def run() -> None:
            conn = self._connect()
            try:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            finally:
                conn.close()

        try:
            await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise StoreError(f"ledger write failed: {exc}") from exc

    async def _read_rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return list(await self._read(sql, params))

    async def _write_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._write(sql, rows)

    async def usage(
        self,
        group_by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]:
        sql = usage_sql(group_by, "?", since is not None, until is not None)
        params = [d.timestamp() for d in (since, until) if d is not None]
        return usage_rows(group_by, await self._read(sql, params))

    async def savings(
        self,
        group_by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SavingsRow]:
        sql = savings_sql(group_by, "?", since is not None, until is not None)
        params = [d.timestamp() for d in (since, until) if d is not None]
        return savings_rows(group_by, await self._read(sql, params))

    async def create_key(self, key: ApiKey) -> None:
        await self._write(insert_key_sql("?"), [key_row(key)])

    async def find_key(self, digest: str) -> ApiKey | None:
        rows = await self._read(find_key_sql("?"), (digest,))
        return ApiKey(*rows[0]) if rows else None

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        params = () if tenant is None else (tenant,)
        return [
            ApiKey(*r) for r in await self._read(list_keys_sql("?", tenant is not None), params)
        ]

    async def records(self, request_id: str) -> list[UsageRecord]:
        rows = await self._read(records_sql("?"), (request_id,))
        return [record_of(r) for r in rows]

    async def set_revenue(self, entries: Sequence[RevenueEntry]) -> None:
        await self._write(upsert_revenue_sql("?"), [revenue_row(e) for e in entries])

    async def list_revenue(self) -> list[RevenueEntry]:
        return [revenue_of(r) for r in await self._read(SELECT_REVENUE)]


def _settle_all(answers: list[_Outcome]) -> None:
    """On the event loop: answer the waiting ``record``s of a batch; one whose caller was
    cancelled (client gone) is skipped, its row committed all the same."""
    for fut, exc in answers:
        if fut.done():
            continue
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)
