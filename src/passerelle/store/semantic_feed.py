"""How replicas sharing Redis share semantic cache entries: a stream each of them reads.

Redis here has no vector search, so each replica keeps its own index (``store/vectors.py``) and
they agree on its contents through one Redis stream, ``passerelle:cache:semantic:feed``: a
replica that keeps an answer appends a record (the partition, the answer's key, the prompt, its
embedding as float16, when it expires) and every replica adds the records it reads to its
index. The answers themselves are in the shared answer store (``RedisAnswers``, namespace
``semantic``), bounded as the exact cache's are; the stream is trimmed to about as many records
as the index may hold.

At start-up a replica reads the stream from its start (the entries stored before it came up),
then follows it, blocking on ``XREAD`` for at most ``BLOCK_MS`` at a time. Redis unreachable:
the follower logs, waits and reads on from where it was; entries kept meanwhile by other
replicas reach it then. An entry whose answer has gone from the store (expired, evicted, Redis
flushed) is only a miss, and leaves the index when found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from redis.exceptions import RedisError

from passerelle.store.redis import SharedState, unreachable
from passerelle.store.vectors import Vector

log = logging.getLogger("passerelle.cache")
STREAM = "passerelle:cache:semantic:feed"
BLOCK_MS = 500
RETRY_S = 1.0
BATCH = 512


@dataclass(frozen=True, slots=True)
class Record:
    partition: str
    key: str
    prompt: str
    vector: Vector
    expires: float  # unix time

    def fields(self) -> dict[str, bytes]:
        meta = {"p": self.partition, "k": self.key, "t": self.prompt, "e": self.expires}
        return {"m": orjson.dumps(meta), "v": self.vector.astype(np.float16).tobytes()}

    @classmethod
    def of(cls, fields: dict[Any, Any]) -> Record | None:
        try:
            meta = orjson.loads(fields[b"m"])
            vector = np.frombuffer(fields[b"v"], dtype=np.float16).astype(np.float32)
            return cls(meta["p"], meta["k"], meta["t"], vector, float(meta["e"]))
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            return None


class RedisFeed:
    """Publish what this replica keeps; read, from the start and then as it comes, what all do."""

    def __init__(self, state: SharedState, *, max_records: int) -> None:
        self._state = state
        self._max = max_records
        self._last = "0-0"
        self._task: asyncio.Task[None] | None = None
        state.register(_nothing_to_put_back)

    async def publish(self, record: Record) -> None:
        try:
            await self._state.redis.xadd(
                STREAM,
                record.fields(),
                maxlen=self._max,
                approximate=True,
            )
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc

    async def catch_up(self, on_record: Callable[[Record], None]) -> int:
        """Read every record after the last one read; how many there were."""
        read = 0
        while True:
            try:
                batch: Any = await self._state.redis.xrange(
                    STREAM, min=f"({self._last}", max="+", count=BATCH
                )
            except (RedisError, OSError) as exc:
                raise unreachable(exc) from exc
            for record_id, fields in batch:
                self._take(record_id, fields, on_record)
                read += 1
            if len(batch) < BATCH:
                return read

    def follow(self, on_record: Callable[[Record], None]) -> None:
        """Read on in the background until ``close``."""
        self._task = asyncio.create_task(self._follow(on_record), name="semantic-cache-feed")

    async def _follow(self, on_record: Callable[[Record], None]) -> None:
        while True:
            try:
                found: Any = await self._state.redis.xread(
                    {STREAM: self._last}, count=BATCH, block=BLOCK_MS
                )
                for _stream, records in found or []:
                    for record_id, fields in records:
                        self._take(record_id, fields, on_record)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("semantic cache feed unreachable, retrying: %s", exc)
                await asyncio.sleep(RETRY_S)

    def _take(self, record_id: Any, fields: Any, on_record: Callable[[Record], None]) -> None:
        self._last = record_id.decode() if isinstance(record_id, bytes) else str(record_id)
        record = Record.of(fields)
        if record is not None:
            on_record(record)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._state.close()


async def _nothing_to_put_back(epoch: str) -> None:
    return None
