"""Where the audit trail is kept: two append-only tables beside the ledger, SQLite or PostgreSQL.

``audit_records`` holds each chain's records in order (``chain``, ``seq`` from 1, the time, the
record's canonical JSON and its keyed hash); ``audit_checkpoints`` the signed heads of the
chains, taken from time to time. The store only keeps and returns rows: what a record says, how
it is chained and how a chain is verified is ``sovereignty/audit.py``'s. Writes come in batches
from the trail's writer task, never from a request waiting; SQLite's run on a thread of their own
(its own connection, in WAL mode beside the ledger's writer), PostgreSQL's on a small pool.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg


@dataclass(frozen=True, slots=True)
class AuditRecord:
    chain: str
    seq: int
    ts: float
    body: str  # canonical JSON
    hash: str  # hex HMAC over the previous hash and the body


@dataclass(frozen=True, slots=True)
class Checkpoint:
    chain: str
    seq: int
    hash: str  # the chain's head at ``seq``
    ts: float
    signature: str  # hex HMAC over the four fields above


class AuditStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, records: Sequence[AuditRecord]) -> None: ...

    async def restore(self, records: Sequence[AuditRecord]) -> None:
        """Add the records the store lacks; one it holds stays as it is."""
        ...

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    async def heads(self) -> list[tuple[str, int, str]]:
        """Each chain's last (chain, seq, hash)."""
        ...

    async def records(self, since: float | None = None) -> list[AuditRecord]:
        """Every record (from ``since``), by chain then seq."""
        ...

    async def checkpoints(self, since: float | None = None) -> list[Checkpoint]: ...


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_records (chain TEXT NOT NULL, seq BIGINT NOT NULL, "
    "ts DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, hash TEXT NOT NULL, "
    "PRIMARY KEY (chain, seq))",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (chain TEXT NOT NULL, seq BIGINT NOT NULL, "
    "ts DOUBLE PRECISION NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL)",
)
HEADS = (
    "SELECT r.chain, r.seq, r.hash FROM audit_records r JOIN (SELECT chain, MAX(seq) AS seq "
    "FROM audit_records GROUP BY chain) m ON r.chain = m.chain AND r.seq = m.seq ORDER BY r.chain"
)


class SqliteAudit(AuditStore):
    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None

    async def start(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await asyncio.to_thread(self._open)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            db.execute(statement)
        db.commit()
        return db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def _run(self, sql: str, rows: Sequence[tuple[Any, ...]] = (), many: bool = False) -> Any:
        assert self._db is not None, "audit store not started"
        db = self._db

        def work() -> list[Any]:
            with db:
                if many:
                    db.executemany(sql, rows)
                    return []
                return db.execute(sql, rows[0] if rows else ()).fetchall()

        return await asyncio.to_thread(work)

    async def append(self, records: Sequence[AuditRecord]) -> None:
        rows = [(r.chain, r.seq, r.ts, r.body, r.hash) for r in records]
        await self._run("INSERT INTO audit_records VALUES (?, ?, ?, ?, ?)", rows, many=True)

    async def restore(self, records: Sequence[AuditRecord]) -> None:
        rows = [(r.chain, r.seq, r.ts, r.body, r.hash) for r in records]
        sql = "INSERT OR IGNORE INTO audit_records VALUES (?, ?, ?, ?, ?)"
        await self._run(sql, rows, many=True)

    async def add_checkpoint(self, c: Checkpoint) -> None:
        row = (c.chain, c.seq, c.ts, c.hash, c.signature)
        await self._run("INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?)", [row], many=True)

    async def heads(self) -> list[tuple[str, int, str]]:
        return [(r[0], int(r[1]), r[2]) for r in await self._run(HEADS)]

    async def records(self, since: float | None = None) -> list[AuditRecord]:
        rows = await self._run(
            "SELECT chain, seq, ts, body, hash FROM audit_records WHERE ts >= ? "
            "ORDER BY chain, seq",
            [(since or 0.0,)],
        )
        return [AuditRecord(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows]

    async def checkpoints(self, since: float | None = None) -> list[Checkpoint]:
        rows = await self._run(
            "SELECT chain, seq, hash, ts, signature FROM audit_checkpoints WHERE ts >= ? "
            "ORDER BY ts",
            [(since or 0.0,)],
        )
        return [Checkpoint(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows]


class PostgresAudit(AuditStore):
    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=2)
        # replicas starting together create the tables once
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7243001)")
            for statement in SCHEMA:
                await conn.execute(statement)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _ready(self) -> asyncpg.Pool:
        assert self._pool is not None, "audit store not started"
        return self._pool

    async def append(self, records: Sequence[AuditRecord]) -> None:
        rows = [(r.chain, r.seq, r.ts, r.body, r.hash) for r in records]
        async with self._ready().acquire() as conn, conn.transaction():  # all or none
            await conn.executemany("INSERT INTO audit_records VALUES ($1, $2, $3, $4, $5)", rows)

    async def restore(self, records: Sequence[AuditRecord]) -> None:
        rows = [(r.chain, r.seq, r.ts, r.body, r.hash) for r in records]
        sql = "INSERT INTO audit_records VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
        async with self._ready().acquire() as conn, conn.transaction():
            await conn.executemany(sql, rows)

    async def add_checkpoint(self, c: Checkpoint) -> None:
        await self._ready().execute(
            "INSERT INTO audit_checkpoints VALUES ($1, $2, $3, $4, $5)",
            c.chain,
            c.seq,
            c.ts,
            c.hash,
            c.signature,
        )

    async def heads(self) -> list[tuple[str, int, str]]:
        return [(r[0], int(r[1]), r[2]) for r in await self._ready().fetch(HEADS)]

    async def records(self, since: float | None = None) -> list[AuditRecord]:
        rows = await self._ready().fetch(
            "SELECT chain, seq, ts, body, hash FROM audit_records WHERE ts >= $1 "
            "ORDER BY chain, seq",
            since or 0.0,
        )
        return [AuditRecord(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows]

    async def checkpoints(self, since: float | None = None) -> list[Checkpoint]:
        rows = await self._ready().fetch(
            "SELECT chain, seq, hash, ts, signature FROM audit_checkpoints WHERE ts >= $1 "
            "ORDER BY ts",
            since or 0.0,
        )
        return [Checkpoint(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows]


def open_audit(store_url: str) -> AuditStore:
    """The audit store beside the ledger the configuration names."""
    if store_url.startswith("sqlite:///"):
        return SqliteAudit(store_url.removeprefix("sqlite:///"))
    return PostgresAudit(store_url)
