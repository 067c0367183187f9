"""Idempotency keys: the first answer kept for a day, per tenant and key.

``begin`` claims a key for a request body (by digest): the first caller proceeds; a later one with
the same body gets the stored answer (or 409 while the first is still running); another body under
the same key is a conflict (409). ``complete`` stores the answer; ``abandon`` frees the key when
the first attempt failed, so the client's retry can run. In one process a dictionary bounded by
entries and by bytes (``server.idempotency_max_bytes``); across replicas Redis, where the claim is
one atomic script.

Redis can lose its state (restarted empty, flushed). Claims still running are then put back by
the replica running them; answers already given cannot be replayed from memory, so each replica
remembers the keys it answered (up to ``REMEMBERED``, for ``TTL_S``) and puts them back as
*lost*: the key is refused (409 ``idempotency_answer_lost``), never run a second time.
"""

from __future__ import annotations

import logging
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
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 100_000
ENTRY_OVERHEAD_BYTES = 256  # the key, the digest, the tuple and the headers, roughly
log = logging.getLogger("passerelle.idempotency")
PREFIX = "passerelle:idem:"


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    headers: dict[str, str]
    body: bytes | None  # a JSON answer
    chunks: list[bytes] | None  # or the SSE payloads of a stream
    # the SSE event names of the chunks (a dialect's, such as Anthropic's), when they have any
    events: list[str | None] | None = None
    native: bool = False  # the provider answered in the client's dialect: nothing to translate

    def size(self) -> int:
        """The bytes this answer holds in memory, roughly (what a byte bound counts)."""
        held = len(self.body) if self.body is not None else 0
        if self.chunks is not None:
            held += sum(len(c) + 40 for c in self.chunks) + 8 * len(self.chunks)
        return held + ENTRY_OVERHEAD_BYTES + sum(len(k) + len(v) for k, v in self.headers.items())

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "headers": self.headers,
                "body": self.body.decode() if self.body is not None else None,
                "chunks": [c.decode() for c in self.chunks] if self.chunks is not None else None,
                "events": self.events,
                "native": self.native,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> StoredAnswer:
        d = orjson.loads(raw)
        return cls(
            headers=d["headers"],
            body=d["body"].encode() if d["body"] is not None else None,
            chunks=[c.encode() for c in d["chunks"]] if d["chunks"] is not None else None,
            events=d.get("events"),
            native=bool(d.get("native")),
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
    """In one process: bounded by entries and by the bytes of the answers it keeps.

    Past either bound the oldest stored answers are forgotten first (a retry under a forgotten
    key runs again); a key still in progress is never forgotten before it expires, so two copies
    of one request never run at once. An answer larger than the whole byte bound is not kept.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._pending: dict[str, tuple[str, float]] = {}  # key -> (digest, expires)
        # key -> (digest, expires, answer, size); insertion order is age, oldest first
        self._answers: dict[str, tuple[str, float, StoredAnswer, int]] = {}
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._clock = clock

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._pending) + len(self._answers)

    async def begin(self, key: str, digest: str) -> Claim:
        now = self._clock()
        stored = self._answers.get(key)
        if stored is not None and stored[1] < now:
            self._forget(key)
            stored = None
        if stored is not None:
            return Claim("conflict") if stored[0] != digest else Claim("replay", stored[2])
        pending = self._pending.get(key)
        if pending is not None and pending[1] < now:
            del self._pending[key]
            pending = None
        if pending is not None:
            return Claim("conflict") if pending[0] != digest else Claim("pending")
        if len(self) >= self._max_entries:
            self._make_room(now)
        self._pending[key] = (digest, now + PENDING_TTL_S)
        return Claim("new")

    async def complete(self, key: str, digest: str, answer: StoredAnswer) -> None:
        self._pending.pop(key, None)
        if key in self._answers:
            self._forget(key)
        size = answer.size()
        if size > self._max_bytes:
            log.warning("an answer of %d bytes is over the idempotency store's bound", size)
            return
        self._answers[key] = (digest, self._clock() + TTL_S, answer, size)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._forget(next(iter(self._answers)))

    async def abandon(self, key: str, digest: str) -> None:
        pending = self._pending.get(key)
        if pending is not None and pending[0] == digest:
            del self._pending[key]

    async def close(self) -> None:
        return None

    def _forget(self, key: str) -> None:
        self._bytes -= self._answers.pop(key)[3]

    def _make_room(self, now: float) -> None:
        """Expired entries go first, then the oldest answers, down to nine tenths of the bound."""
        self._pending = {k: v for k, v in self._pending.items() if v[1] >= now}
        for key in [k for k, v in self._answers.items() if v[1] < now]:
            self._forget(key)
        target = self._max_entries * 9 // 10
        while self._answers and len(self) > target:
            self._forget(next(iter(self._answers)))


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
