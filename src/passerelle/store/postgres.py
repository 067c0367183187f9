"""The scale-out ledger: PostgreSQL through an asyncpg pool, written by one task in batches.

It keeps the embedded ledger's promise with a server that every replica shares. Requests hand
their record to a bounded queue and wait for their batch's commit, so nobody waits on an insert of
their own and nobody is answered before their row is durable (``synchronous_commit=on``, the
server's default: a start-up warning says when the server was set to less). A batch is one
transaction. A connection-level failure (a terminated backend, a restarting server) is not the
rows' fault: the batch is retried on a fresh connection with backoff while its callers wait, and
only a server that stays unreachable fails them. A batch the database refuses for what it holds
is retried row by row, so one bad row never drops its neighbours; that row goes to the dead-letter
file (``store/deadletter.py``). ``close`` drains the queue before it closes the pool. Reads share the pool and use
``$n`` parameters only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from passerelle.errors import StoreError
from passerelle.store.deadletter import DeadLetters
from passerelle.store.migrations import migrate_postgres
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
PG = "${i}"  # asyncpg placeholders: $1, $2, ...

CONNECT_TIMEOUT_S = 10.0
MIGRATION_LOCK = 0x70617373  # pg_advisory_xact_lock key: replicas starting together migrate once
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# What the database (or asyncpg, before sending) may raise; anything else is a bug and propagates.
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_Pending = tuple[tuple[object, ...], "asyncio.Future[None]"]
_Write = Callable[[Any, list[tuple[object, ...]]], Awaitable[None]]
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
MIN_CHUNK = 16  # the smallest transaction a batch is split into while connections keep dying
UNREACHABLE_AFTER_S = 15.0


class _UnreachableError(Exception):
    """Connection-level failures lasted past ``unreachable_after_s``."""


def is_row_error(exc: BaseException) -> bool:
    """True when the database (or asyncpg, encoding the arguments) refused the row itself: a
    value out of range or of the wrong kind, a constraint it breaks. Everything else (a lost
    connection, a terminated backend, a server shutting down, a timeout) is not the row's fault:
    the row is retried, never discarded."""
    return isinstance(
        exc,
        (
            asyncpg.DataError,
            asyncpg.IntegrityConstraintViolationError,
            OverflowError,
            TypeError,
            ValueError,
        ),
    )


class PostgresLedger(OutcomeQueries):
    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 10,
        dead_letters: Path | None = None,
        unreachable_after_s: float = UNREACHABLE_AFTER_S,
    ) -> None:
        """``schema``: a schema to create and use instead of the search path's (tests, tenants
        of a shared server); it must be a plain identifier. ``dead_letters``: where rows the
        database refuses are kept. ``unreachable_after_s``: how long a write retries a lost
        connection before its callers fail and the ledger marks itself unhealthy."""
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"invalid PostgreSQL schema name: {schema!r}")
        self.url = url
        self.schema = schema
        self.commits = 0  # transactions that wrote rows (batching is observable)
        self.retries = 0  # writes retried after a connection-level failure
        self.dead_letters = DeadLetters(dead_letters)
        self.unreachable_after_s = unreachable_after_s
        self.healthy = True  # False while the server is unreachable: calls are refused (503)
        self._probing: asyncio.Task[None] | None = None
        self._pool_size = pool_size
        self._pool: Any = None  # asyncpg.Pool (asyncpg ships no type information)
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._insert = insert_sql(PG)

    async def start(self) -> None:
        if self._writer is not None:
            return
        settings = {"application_name": "passerelle"}
        if self.schema is not None:
            settings["search_path"] = self.schema
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_S,
                server_settings=settings,
            )
            await self._migrate()
        except (*_DB_ERRORS, ValueError) as exc:  # ValueError: a malformed URL
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            raise StoreError(
                f"cannot open the PostgreSQL ledger at {redact(self.url)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._closing = False
        self._queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._writer = asyncio.create_task(self._write_batches(), name="ledger-writer")

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            if self.schema is not None:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await migrate_postgres(conn)
            mode = await conn.fetchval("SHOW synchronous_commit")
        if mode in ("off", "local"):
            log.warning(
                "PostgreSQL synchronous_commit=%s: a server crash can lose records "
                "already acknowledged to clients",
                mode,
            )

    async def close(self) -> None:
        if self._writer is None:
            return
        self._closing = True  # new records are refused; queued ones are written
        await self._queue.put(None)
        await self._writer
        self._writer = None
        await self._pool.close()
        self._pool = None

    async def record(self, record: UsageRecord) -> None:
        writer = self._writer
        if writer is None or self._closing:
            raise StoreError("ledger is not started")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((row_of(record), fut))  # waits while the queue is full
        if writer.done() and not fut.done():
            # queued behind close()'s last look at the queue (it waited for room meanwhile)
            raise StoreError("ledger closed before the record was written")
        await fut

    # the writer task -------------------------------------------------------------------------
    async def _write_batches(self) -> None:
        stopping = False
        while not (stopping and self._queue.empty()):
            item = await self._queue.get()
            batch: list[_Pending] = []
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(batch)

    # Exception, not only database errors, in the methods below: whatever a row does, the
    # writer must live on, or every later record() would wait forever.
    async def _commit(self, batch: list[_Pending]) -> None:
        """The batch in one transaction, or in smaller ones while connections keep dying (a
        short transaction finishes between two terminations); callers wait meanwhile, and
        only a server unreachable for ``unreachable_after_s`` (with no progress) fails them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.unreachable_after_s
        delay, size = RETRY_FIRST_S, len(batch)
        while batch:
            chunk, rest = batch[:size], batch[size:]
            try:
                async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn:
                    await self._insert_many(conn, [row for row, _ in chunk])
            except Exception as exc:
                if is_row_error(exc):  # a row the database refuses: find it, keep the others
                    log.warning(
                        "ledger batch of %d refused (%s); writing its rows one by one",
                        len(chunk),
                        type(exc).__name__,
                    )
                    await self._commit_each(chunk)
                    batch = rest
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    self._fail(batch, _UnreachableError(f"{type(exc).__name__}: {exc}"))
                    return
                self.retries += 1
                log.warning(
                    "ledger write of %d row(s) failed (%s: %s); retrying on a new connection",
                    len(chunk),
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(min(delay, left))
                delay, size = min(delay * 2, RETRY_MAX_S), max(MIN_CHUNK, size // 2)
                continue
            self.commits += 1
            for _, fut in chunk:
                _settle(fut)
            batch = rest
            deadline, delay = loop.time() + self.unreachable_after_s, RETRY_FIRST_S

    async def _commit_each(self, batch: list[_Pending]) -> None:
        for i, (row, fut) in enumerate(batch):
            try:
                await self._retrying(self._insert_many, [row])
            except _UnreachableError as exc:
                self._fail(batch[i:], exc)
                return
            except Exception as exc:
                self.dead_letters.keep(row, exc)
                _settle(fut, StoreError(f"ledger rejected record: {type(exc).__name__}: {exc}"))
            else:
                self.commits += 1
                _settle(fut)

    async def _insert_many(self, conn: Any, rows: list[tuple[object, ...]]) -> None:
        async with conn.transaction():
            await conn.executemany(self._insert, rows)

    async def _retrying(self, write: _Write, rows: list[tuple[object, ...]]) -> None:
        """``write`` on a pooled connection; a connection-level failure is retried on a fresh
        one, with backoff, for ``unreachable_after_s``, then ``_UnreachableError``. What the
        database says about the rows themselves is raised at once. A retry may find the rows
        committed already (the connection died after the commit): the insert skips them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.unreachable_after_s
        delay = RETRY_FIRST_S
        while True:
            try:
                async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn:
                    await write(conn, rows)
                return
            except Exception as exc:
                if is_row_error(exc):
                    raise
                left = deadline - loop.time()
                if left <= 0:
                    raise _UnreachableError(f"{type(exc).__name__}: {exc}") from exc
                self.retries += 1
                log.warning(
                    "ledger write of %d row(s) failed (%s: %s); retrying on a new connection",
                    len(rows),
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, RETRY_MAX_S)

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        """The server stayed unreachable: these callers are told so (their calls fail)."""
        self._unreachable()
        for _, fut in batch:
            _settle(fut, StoreError(f"ledger unreachable: {exc}"))

    # reads -------------------------------------------------------------------------------------
    async def _fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        if self._pool is None:
            raise StoreError("ledger is not started")
        try:
            rows: list[Sequence[Any]] = await self._pool.fetch(sql, *args)
        except _DB_ERRORS as exc:
            raise StoreError(f"ledger read failed: {type(exc).__name__}: {exc}") from exc
        return rows

    placeholder = PG

    async def _read_rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return await self._fetch(sql, *params)

    async def _write_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self._pool is None:
            raise StoreError("ledger is not started")
        try:
            await self._pool.executemany(sql, rows)
        except _DB_ERRORS as exc:
            raise StoreError(f"ledger write failed: {type(exc).__name__}: {exc}") from exc

    async def usage(
        self,
        group_by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]:
        sql = usage_sql(group_by, PG, since is not None, until is not None)
        params = [d.timestamp() for d in (since, until) if d is not None]
        return usage_rows(group_by, await self._fetch(sql, *params))

    async def savings(
        self,
        group_by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SavingsRow]:
        sql = savings_sql(group_by, PG, since is not None, until is not None)
        params = [d.timestamp() for d in (since, until) if d is not None]
        return savings_rows(group_by, await self._fetch(sql, *params))

    async def create_key(self, key: ApiKey) -> None:
        if self._pool is None:
            raise StoreError("ledger is not started")
        try:
            await self._pool.execute(insert_key_sql(PG), *key_row(key))
        except _DB_ERRORS as exc:
            raise StoreError(f"ledger write failed: {type(exc).__name__}: {exc}") from exc

    async def find_key(self, digest: str) -> ApiKey | None:
        rows = await self._fetch(find_key_sql(PG), digest)
        return ApiKey(*rows[0]) if rows else None

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        args = () if tenant is None else (tenant,)
        rows = await self._fetch(list_keys_sql(PG, tenant is not None), *args)
        return [ApiKey(*r) for r in rows]

    async def records(self, request_id: str) -> list[UsageRecord]:
        rows = await self._fetch(records_sql(PG), request_id)
        return [record_of(r) for r in rows]

    async def set_revenue(self, entries: Sequence[RevenueEntry]) -> None:
        if self._pool is None:
            raise StoreError("ledger is not started")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.executemany(upsert_revenue_sql(PG), [revenue_row(e) for e in entries])
        except _DB_ERRORS as exc:
            raise StoreError(f"ledger write failed: {type(exc).__name__}: {exc}") from exc

    async def list_revenue(self) -> list[RevenueEntry]:
        return [revenue_of(r) for r in await self._fetch(SELECT_REVENUE)]

    async def _probe(self) -> None:
        """While the server is unreachable, try it every second; healthy again on success."""
        while not self.healthy and self._pool is not None:
            await asyncio.sleep(1.0)
            try:
                async with self._pool.acquire(timeout=2.0) as conn:
                    await conn.fetchval("SELECT 1")
            except Exception:
                continue
            self.healthy = True
            log.warning("PostgreSQL ledger reachable again")

    def _unreachable(self) -> None:
        if self.healthy:
            log.error("PostgreSQL ledger unreachable: refusing requests until it is back")
            self.healthy = False
            self._probing = asyncio.create_task(self._probe(), name="ledger-probe")


def _settle(fut: asyncio.Future[None], exc: BaseException | None = None) -> None:
    """Answer a waiting ``record``; one whose caller was cancelled (client gone) is skipped."""
    if fut.done():
        return  # the row is committed (or refused) all the same; nobody is waiting
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def redact(url: str) -> str:
    """The URL without its password (in the user part or the query), fit for a message."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
