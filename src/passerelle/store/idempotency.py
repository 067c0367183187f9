"""Idempotency keys: the first answer kept for a day, per tenant and key.

``begin`` claims a key for a request body (by digest): the first caller proceeds; a later one with
the same body gets the stored answer (or 409 while the first is still running); another body under
the same key is a conflict (409). ``complete`` stores the answer; ``abandon`` frees the key when
the first attempt failed, so the client's retry can run. In one process a dictionary; across
replicas Redis, where the claim is one atomic script.

Redis can lose its state (restarted empty, flushed). Claims still running are then put back by
the replica running them; answers already given cannot be replayed from memory, so each replica
remembers the keys it answered (up to ``REMEMBERED``, for ``TTL_S``) and puts them back as
*lost*: the key is refused (409 ``idempotency_answer_lost``), never run a second time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from passerelle.errors import StoreError
from passerelle.store.redis import EPOCH_GUARD, EPOCH_IS, SharedState

TTL_S = 24 * 3600
PENDING_TTL_S = 600
PREFIX = "passerelle:idem:"


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    headers: dict[str, str]
    body: bytes | None  # a JSON answer
    chunks: list[bytes] | None  # or the SSE payloads of a stream

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "headers": self.headers,
                "body": self.body.decode() if self.body is not None else None,
                "chunks": [c.decode() for c in self.chunks] if self.chunks is not None else None,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> StoredAnswer:
        d = orjson.loads(raw)
        return cls(
            headers=d["headers"],
            body=d["body"].encode() if d["body"] is not None else None,
            chunks=[c.encode() for c in d["chunks"]] if d["chunks"] is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Claim:
    state: str  # new | replay | conflict | pending | lost (answered, but the answer was lost)
    answer: StoredAnswer | None = None


class IdempotencyStore(Protocol):
    async def begin(self, key: str, digest: str) -> Claim: ...

    async def complete(self, key: str, digest: str, answer: StoredAnswer) -> None: ...

    async def abandon(self, key: str, digest: str) -> None: ...

    async def close(self) -> None: ...


class LocalIdempotency:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[str, float, StoredAnswer | None]] = {}
        self._clock = clock

    async def begin(self, key: str, digest: str) -> Claim:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[1] < now:
            entry = None
        if entry is None:
            if len(self._entries) > 100_000:
                self._entries = {k: v for k, v in self._entries.items() if v[1] >= now}
            self._entries[key] = (digest, now + PENDING_TTL_S, None)
            return Claim("new")
        if entry[0] != digest:
            return Claim("conflict")
        if entry[2] is None:
            return Claim("pending")
        return Claim("replay", entry[2])

    async def complete(self, key: str, digest: str, answer: StoredAnswer) -> None:
        self._entries[key] = (digest, self._clock() + TTL_S, answer)

    async def abandon(self, key: str, digest: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] == digest and entry[2] is None:
            del self._entries[key]

    async def close(self) -> None:
        return None


# ARGV: digest, pending ttl, epoch (EPOCH_GUARD). 'lost': the answer was served, then lost with
# Redis' state; the replica that served it put the key back as lost, never to run again
BEGIN = """
local cur = redis.call('HMGET', KEYS[1], 'digest', 'answer', 'lost')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'digest', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if cur[1] ~= ARGV[1] then return {'conflict'} end
if cur[2] then return {'replay', cur[2]} end
if cur[3] then return {'lost'} end
return {'pending'}
"""

ABANDON = """
local cur = redis.call('HMGET', KEYS[1], 'digest', 'answer')
if cur[1] == ARGV[1] and not cur[2] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: keys to put back. ARGV: per key its digest, ttl, 1 when the answer was lost (0: still
# running); last the epoch (EPOCH_IS)
PUT_BACK = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'digest', ARGV[3*i-2])
    if ARGV[3*i] == '1' then redis.call('HSET', KEYS[i], 'lost', 1) end
    redis.call('EXPIRE', KEYS[i], ARGV[3*i-1])
  end
end
return 1
"""
PUT_BACK_KEYS = 200  # per script call

# keys this replica answered, remembered (digest and expiry, not the answer) so that a Redis that
# lost their answers refuses them instead of running them again; the oldest go first beyond this
REMEMBERED = 20_000


class RedisIdempotency:
    """Claims and answers in Redis; the claims this replica runs and the keys it answered are
    also kept here, to be put back when Redis loses its state (see ``store/redis.py``)."""

    def __init__(self, state: SharedState | str, clock: Callable[[], float] = time.time) -> None:
        self._state = state if isinstance(state, SharedState) else SharedState(state)
        redis = self._state.redis
        self._begin = redis.register_script(EPOCH_GUARD + BEGIN)
        self._abandon = redis.register_script(ABANDON)
        self._put_back = redis.register_script(EPOCH_IS + PUT_BACK)
        self._clock = clock
        self._running: dict[str, tuple[str, float]] = {}  # key -> digest, claimed at: running
        self._answered: OrderedDict[str, tuple[str, float]] = OrderedDict()  # -> digest, expiry
        self._state.register(self._reregister)

    async def begin(self, key: str, digest: str) -> Claim:
        self._state.start()
        out, epoch = await self._state.run(self._begin, [PREFIX + key], [digest, PENDING_TTL_S])
        state = out[0].decode() if isinstance(out[0], bytes) else out[0]
        if state == "new":
            self._running[key] = (digest, self._clock())
            if self._state.epoch != epoch:  # Redis lost it while the answer was on its way
                await self._put_back_one(key, digest, PENDING_TTL_S, lost=False)
        return Claim(state, StoredAnswer.loads(out[1]) if state == "replay" else None)

    async def complete(self, key: str, digest: str, answer: StoredAnswer) -> None:
        k = PREFIX + key
        self._running.pop(key, None)
        self._answered[key] = (digest, self._clock() + TTL_S)
        self._answered.move_to_end(key)
        while len(self._answered) > REMEMBERED:
            self._answered.popitem(last=False)
        try:
            await self._state.redis.hset(k, mapping={"digest": digest, "answer": answer.dumps()})
            await self._state.redis.expire(k, TTL_S)
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis is unreachable: {exc}") from exc

    async def abandon(self, key: str, digest: str) -> None:
        self._running.pop(key, None)
        try:
            await self._abandon(keys=[PREFIX + key], args=[digest])
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis is unreachable: {exc}") from exc

    async def _reregister(self, epoch: str) -> None:
        now = self._clock()
        entries: list[tuple[str, str, int, bool]] = []
        for key, (digest, claimed) in list(self._running.items()):
            if claimed + PENDING_TTL_S <= now:  # its claim would have expired anyway
                self._running.pop(key, None)
                continue
            entries.append((key, digest, PENDING_TTL_S, False))
        for key, (digest, expiry) in list(self._answered.items()):
            if expiry <= now:
                self._answered.pop(key, None)
                continue
            entries.append((key, digest, int(expiry - now), True))
        await self._put_back_all(entries, epoch)

    async def _put_back_one(self, key: str, digest: str, ttl_s: int, *, lost: bool) -> None:
        await self._put_back_all([(key, digest, ttl_s, lost)], self._state.epoch)

    async def _put_back_all(self, entries: list[tuple[str, str, int, bool]], epoch: str) -> None:
        calls: list[tuple[Any, list[str], list[Any]]] = []
        for i in range(0, len(entries), PUT_BACK_KEYS):
            keys: list[str] = []
            args: list[Any] = []
            for key, digest, ttl_s, lost in entries[i : i + PUT_BACK_KEYS]:
                keys.append(PREFIX + key)
                args.extend([digest, max(1, ttl_s), 1 if lost else 0])
            calls.append((self._put_back, keys, [*args, epoch]))
        for out in await self._state.batch(calls):
            if isinstance(out, list):  # the epoch guard's answer: Redis lost its state again
                raise StoreError("redis lost its state again while idempotency keys were put back")

    async def close(self) -> None:
        await self._state.close()
