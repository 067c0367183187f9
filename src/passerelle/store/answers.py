"""Stored answers for the answer cache: opaque entries under opaque keys, with a lifetime and bounds.

The pipeline's cache (``pipeline/cache.py``) decides what an entry holds and what its key is (a
digest that covers the tenant, the route and every field that changes the answer); this module
only keeps bytes, and keeps them bounded: every entry expires ``ttl_s`` after it was stored, and
the whole store holds at most ``max_entries`` entries and ``max_bytes`` bytes of them. An entry
larger than ``max_bytes`` is not kept. Each store has a ``namespace`` (``exact``; another lookup
strategy keeps its entries apart under its own).

In one process (``LocalAnswers``) a dictionary in least-recently-used order: past a bound the
entry used longest ago goes first. With Redis (``RedisAnswers``) every replica shares the entries:
one key per entry with the lifetime as its expiry, and the bounds kept by one script per store
(an index of the entries by age, their sizes and the total), so the oldest entries go first and
Redis never holds more than the bounds say: Redis also holds budget counters, and no eviction
policy of its own may be relied on to keep the cache small. Losing entries (Redis flushed or
restarted) only costs misses; an unreachable Redis is a ``StoreError`` the cache treats as a
miss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import RedisError

from passerelle.store.redis import SharedState, unreachable

PREFIX = "passerelle:cache:"
# what one entry holds besides its bytes and its key's, as measured by bench/cache.py: in this
# process (the dictionary's slot, the tuple, the objects' headers), and in Redis (the key's own
# record, its expiry, and the entry's place in the index and the sizes)
ENTRY_OVERHEAD_BYTES = 256
REDIS_ENTRY_OVERHEAD_BYTES = 640


@dataclass(frozen=True, slots=True)
class Bounds:
    ttl_s: float
    max_entries: int
    max_bytes: int


class AnswerStore(Protocol):
    """Where the answer cache keeps its entries."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, entry: bytes) -> None:
        """Keep ``entry`` under ``key`` (replacing what was there) for the store's lifetime."""
        ...

    async def close(self) -> None: ...


class LocalAnswers:
    """In one process: least recently used first out, each entry with its expiry."""

    def __init__(self, bounds: Bounds, clock: Callable[[], float] = time.monotonic) -> None:
        self._bounds = bounds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # -> expires, entry
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            self._forget(key)
            return None
        self._entries.move_to_end(key)
        return found[1]

    async def put(self, key: str, entry: bytes) -> None:
        bounds = self._bounds
        if key in self._entries:
            self._forget(key)
        size = len(entry) + len(key) + ENTRY_OVERHEAD_BYTES
        if size > bounds.max_bytes or bounds.max_entries < 1 or bounds.ttl_s <= 0:
            return
        now = self._clock()
        # a copy of exactly its size: bytes that orjson made hold a buffer of 8 KiB or more,
        # which would make the byte bound a tenth of what is really held
        self._entries[key] = (now + bounds.ttl_s, memoryview(entry).tobytes())
        self._bytes += size
        entries = self._entries
        while len(entries) > bounds.max_entries or self._bytes > bounds.max_bytes:
            self._forget(next(iter(entries)))
        while entries:  # expired entries at the old end go now; those further in at their lookup
            oldest = next(iter(entries))
            if entries[oldest][0] > now:
                break
            self._forget(oldest)

    async def close(self) -> None:
        return None

    def _forget(self, key: str) -> None:
        _, entry = self._entries.pop(key)
        self._bytes -= len(entry) + len(key) + ENTRY_OVERHEAD_BYTES


# KEYS: the entry, the index (zset: entry key -> stored at, ms), the sizes (hash: entry key ->
# bytes), the total bytes. ARGV: the entry, ttl ms, max entries, max bytes. The entries it drops
# are named by the index, not by KEYS: a single Redis, as everywhere in the gateway.
PUT = """
local function drop(k)
  local size = tonumber(redis.call('HGET', KEYS[3], k) or '0')
  redis.call('DEL', k)
  redis.call('ZREM', KEYS[2], k)
  redis.call('HDEL', KEYS[3], k)
  if redis.call('DECRBY', KEYS[4], size) < 0 then redis.call('SET', KEYS[4], 0) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, max_entries, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for _, k in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl, 'LIMIT', 0, 64)) do
  drop(k)
end
if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then drop(KEYS[1]) end
local size = string.len(ARGV[1]) + string.len(KEYS[1]) + tonumber(ARGV[5])
if size > max_bytes or max_entries < 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
local total = redis.call('INCRBY', KEYS[4], size)
while redis.call('ZCARD', KEYS[2]) > max_entries or total > max_bytes do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  drop(oldest)
  total = tonumber(redis.call('GET', KEYS[4]) or '0')
end
return 1
"""


class RedisAnswers:
    """Shared by every replica; see the module's docstring for how the bounds are kept."""

    def __init__(self, state: SharedState, bounds: Bounds, *, namespace: str = "exact") -> None:
        self._state = state
        self._bounds = bounds
        self._prefix = f"{PREFIX}{namespace}:"
        self._index = [f"{self._prefix}index", f"{self._prefix}sizes", f"{self._prefix}bytes"]
        self._put = state.redis.register_script(PUT)
        state.register(_nothing_to_put_back)  # a lost entry is a miss, nothing more

    async def get(self, key: str) -> bytes | None:
        try:
            found: Any = await self._state.redis.get(self._prefix + key)
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc
        return bytes(found) if found is not None else None

    async def put(self, key: str, entry: bytes) -> None:
        bounds = self._bounds
        ttl_ms = int(bounds.ttl_s * 1000)
        if ttl_ms <= 0:
            return
        args = [entry, ttl_ms, bounds.max_entries, bounds.max_bytes, REDIS_ENTRY_OVERHEAD_BYTES]
        try:
            await self._put(keys=[self._prefix + key, *self._index], args=args)
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc

    async def held(self) -> tuple[int, int]:
        """Entries and bytes the store counts (for tests and operators)."""
        try:
            entries = await self._state.redis.zcard(self._index[0])
            total = await self._state.redis.get(self._index[2])
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc
        return int(entries), int(total or 0)

    async def close(self) -> None:
        await self._state.close()


async def _nothing_to_put_back(epoch: str) -> None:
    return None
