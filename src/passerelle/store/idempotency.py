"""Idempotency keys: the first answer kept for a day, per tenant and key.

``begin`` claims a key for a request body (by digest): the first caller proceeds; a later one with
the same body gets the stored answer (or 409 while the first is still running); another body under
the same key is a conflict (409). ``complete`` stores the answer; ``abandon`` frees the key when
the first attempt failed, so the client's retry can run. In one process a dictionary; across
replicas Redis, where the claim is one atomic script.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from passerelle.errors import StoreError
from passerelle.store.redis import connect

TTL_S = 24 * 3600
PENDING_TTL_S = 600


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
    state: str  # new | replay | conflict | pending
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


BEGIN = """
local cur = redis.call('HMGET', KEYS[1], 'digest', 'answer')
if not cur[1] then
  redis.call('HSET', KEYS[1], 'digest', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
if cur[1] ~= ARGV[1] then return {'conflict'} end
if not cur[2] then return {'pending'} end
return {'replay', cur[2]}
"""

ABANDON = """
local cur = redis.call('HMGET', KEYS[1], 'digest', 'answer')
if cur[1] == ARGV[1] and not cur[2] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisIdempotency:
    def __init__(self, url: str) -> None:
        self._redis: Any = connect(url)
        self._begin = self._redis.register_script(BEGIN)
        self._abandon = self._redis.register_script(ABANDON)

    async def begin(self, key: str, digest: str) -> Claim:
        try:
            out = await self._begin(keys=["passerelle:idem:" + key], args=[digest, PENDING_TTL_S])
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis is unreachable: {exc}") from exc
        state = out[0].decode() if isinstance(out[0], bytes) else out[0]
        return Claim(state, StoredAnswer.loads(out[1]) if state == "replay" else None)

    async def complete(self, key: str, digest: str, answer: StoredAnswer) -> None:
        k = "passerelle:idem:" + key
        try:
            await self._redis.hset(k, mapping={"digest": digest, "answer": answer.dumps()})
            await self._redis.expire(k, TTL_S)
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis is unreachable: {exc}") from exc

    async def abandon(self, key: str, digest: str) -> None:
        try:
            await self._abandon(keys=["passerelle:idem:" + key], args=[digest])
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis is unreachable: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()
