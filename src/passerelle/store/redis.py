"""The Redis that shared state lives in: one bounded pool, and an epoch that tells when it was lost.

Under a burst, requests wait briefly for one of a few dozen connections instead of opening one
each (Redis answers each script in microseconds; hundreds of sockets only add contention).

Redis is not the truth (the ledger is), but it holds what the ledger cannot know yet: money in
flight (reservations) and idempotency claims in flight. When Redis restarts empty or is flushed
that state is gone, and a replica that simply reseeded from the ledger would hand the money in
flight out a second time. So Redis holds an *epoch* (``passerelle:epoch``: an id and the end of a
recovery window). Every script that decides from shared state checks it first (``EPOCH_GUARD``):

* epoch missing: the state was lost. The replica that notices opens a new epoch whose recovery
  window lasts ``RECOVERY_WINDOW_S``;
* epoch changed: another replica noticed first;
* within the recovery window: every replica re-registers what it holds in memory (its open
  reservations and idempotency claims, see ``SharedState.register``) and decisions fail closed
  (``StateRecoveringError``, a 503).

Each replica notices through its next script call or its watcher (every ``WATCH_INTERVAL_S``),
so by the end of the window every live replica has put back its money in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from passerelle.errors import StateRecoveringError, StoreError

log = logging.getLogger("passerelle.redis")

MAX_CONNECTIONS = 64
WAIT_S = 5.0
EPOCH_KEY = "passerelle:epoch"
RECOVERY_WINDOW_S = 1.0
WATCH_INTERVAL_S = 0.2
BATCH = 500

# Prepended to a script: the caller's epoch is its last argument. {-1}: no epoch (state lost);
# {-2}: another epoch (someone else noticed the loss first).
EPOCH_IS = """
local _ep = redis.call('HMGET', 'passerelle:epoch', 'id', 'until')
if not _ep[1] then return {-1} end
if _ep[1] ~= ARGV[#ARGV] then return {-2} end
"""
# ... and {-3, ms left} while the recovery window lasts
EPOCH_GUARD = (
    EPOCH_IS
    + """
local _t = redis.call('TIME')
local _left = tonumber(_ep[2]) - (tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000))
if _left > 0 then return {-3, _left} end
"""
)
LOST, CHANGED, RECOVERING = -1, -2, -3

# KEYS: the epoch. ARGV: a new id, the recovery window in ms. Returns {id, until_ms, created}.
OPEN = """
local cur = redis.call('HMGET', KEYS[1], 'id', 'until')
if cur[1] then return {cur[1], cur[2], 0} end
local t = redis.call('TIME')
local untl = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'until', untl)
return {ARGV[1], tostring(untl), 1}
"""

# re-registers what one replica holds under the epoch given
Registrant = Callable[[str], Awaitable[None]]


def connect(url: str) -> Any:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=WAIT_S,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )
    # the client owns its pool: closing the client disconnects the pool's connections too
    return aioredis.Redis.from_pool(pool)


def unreachable(exc: BaseException) -> StoreError:
    return StoreError(f"redis is unreachable: {exc}")


class SharedState:
    """One replica's link to Redis: the client, the epoch it registered under, and who to call
    to put back what it holds when Redis lost it."""

    def __init__(
        self,
        url: str,
        *,
        recovery_window_s: float = RECOVERY_WINDOW_S,
        watch_interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self.redis: Any = connect(url)
        self.epoch = ""  # none yet: the first script call opens or joins one
        self._open = self.redis.register_script(OPEN)
        self._window_ms = int(recovery_window_s * 1000)
        self._interval = watch_interval_s
        self._registrants: list[Registrant] = []
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    def register(self, registrant: Registrant) -> None:
        """A user of this state: called with a new epoch to put back what it holds. Each user
        calls ``close`` once; the last one closes the client."""
        self._registrants.append(registrant)

    def start(self) -> None:
        """Watch the epoch in the background (idempotent)."""
        if self._watcher is None and not self._closed:
            self._watcher = asyncio.create_task(self._watch(), name="redis-epoch-watch")

    async def close(self) -> None:
        if self._registrants:
            self._registrants.pop()
        if self._registrants or self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.redis.aclose()

    async def join(self) -> float:
        """Open or join the current epoch, re-registering this replica's state when it is a new
        one. Returns the seconds left in its recovery window (0 when over)."""
        async with self._lock:
            try:
                out = await self._open(
                    keys=[EPOCH_KEY], args=[secrets.token_hex(8), self._window_ms]
                )
            except (RedisError, OSError) as exc:
                raise unreachable(exc) from exc
            epoch = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
            left = min(max(0.0, int(out[1]) / 1000 - time.time()), self._window_ms / 1000)
            if int(out[2]) == 1 and self.epoch:
                log.warning(
                    "redis lost the shared state (restarted empty or flushed): reservations and "
                    "idempotency claims in flight are re-registered, budgets reseeded from the "
                    "ledger; decisions under budgets, limits and idempotency keys are refused "
                    "(503) for %.1fs",
                    self._window_ms / 1000,
                )
            if epoch != self.epoch:
                # the new epoch first: an answer that comes back under the old one from now on
                # is put back by its caller (the registrants' snapshot may have missed it)
                previous, self.epoch = self.epoch, epoch
                try:
                    for registrant in self._registrants:
                        await registrant(epoch)
                except BaseException:
                    self.epoch = previous  # not joined: the next call tries again
                    raise
                if previous:
                    log.warning("re-registered this replica's state in redis epoch %s", epoch)
            return left

    async def run(self, script: Any, keys: list[str], args: list[Any]) -> tuple[Any, str]:
        """Run a script guarded by ``EPOCH_GUARD`` (it takes the epoch as its last argument):
        re-registers and retries when the state was lost; ``StateRecoveringError`` in the window.
        Returns the script's answer and the epoch it ran under."""
        for _ in range(3):
            epoch = self.epoch
            try:
                out = await script(keys=keys, args=[*args, epoch])
            except (RedisError, OSError) as exc:
                raise unreachable(exc) from exc
            code = _code(out)
            if code == RECOVERING:
                raise StateRecoveringError(int(out[1]))
            if code not in (LOST, CHANGED):
                return out, epoch
            await self.join()
        raise StoreError("redis keeps losing the shared state")

    async def batch(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """Run many ``(script, keys, args)`` in pipelines of ``BATCH``: putting back thousands of
        holds or keys takes a few round trips, well inside the recovery window."""
        out: list[Any] = []
        try:
            for i in range(0, len(calls), BATCH):
                pipe = self.redis.pipeline(transaction=False)
                for script, keys, args in calls[i : i + BATCH]:
                    await script(keys=keys, args=args, client=pipe)
                out.extend(await pipe.execute())
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc
        return out

    async def _watch(self) -> None:
        """Notice a new epoch even when this replica has no script to run."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                current = await self.redis.hget(EPOCH_KEY, "id")
                if current is None or current.decode() != self.epoch:
                    await self.join()
            except (RedisError, OSError, StoreError) as exc:
                log.debug("epoch check failed: %s", exc)


def _code(out: Any) -> int | None:
    if isinstance(out, list) and out and isinstance(out[0], int) and out[0] < 0:
        return out[0]
    return None
