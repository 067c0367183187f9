"""Responses the gateway keeps so that a later one can continue them (``previous_response_id``).

A kept response is an opaque document (JSON bytes: the conversation so far and the answer, see
``pipeline/conversation.py``), filed under its tenant and its id: a lookup names both, so one
tenant can never read, or continue, another's. Retention is bounded: each entry expires after
``retention_s``; in one process each tenant holds at most ``max_bytes`` of them, the least
recently used forgotten first (an entry larger than the whole bound is not kept). With Redis
every replica sees the same entries, each under its own key with the retention as its expiry.
Losing an entry (expired, forgotten, Redis flushed) only means its id can no longer be
continued: the client is told so, nothing is run against the wrong history.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from passerelle.store.redis import SharedState, unreachable

PREFIX = "passerelle:resp:"
DEFAULT_RETENTION_S = 24 * 3600
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
ENTRY_OVERHEAD_BYTES = 128


class ConversationStore(Protocol):
    retention_s: float

    async def put(self, tenant: str, response_id: str, document: bytes) -> None: ...

    async def get(self, tenant: str, response_id: str) -> bytes | None: ...

    async def close(self) -> None: ...


class LocalConversations:
    """In one process: per tenant, an LRU bounded by bytes, each entry with an expiry."""

    def __init__(
        self,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retention_s = retention_s
        self._max_bytes = max_bytes
        self._clock = clock
        # tenant -> id -> (expires, document); order is recency, least recent first
        self._tenants: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}
        self._bytes: dict[str, int] = {}

    def held_bytes(self, tenant: str) -> int:
        return self._bytes.get(tenant, 0)

    async def put(self, tenant: str, response_id: str, document: bytes) -> None:
        size = len(document) + len(response_id) + ENTRY_OVERHEAD_BYTES
        if size > self._max_bytes or self.retention_s <= 0:
            return
        entries = self._tenants.setdefault(tenant, OrderedDict())
        if response_id in entries:
            self._forget(tenant, response_id)
        entries[response_id] = (self._clock() + self.retention_s, document)
        self._bytes[tenant] = self._bytes.get(tenant, 0) + size
        now = self._clock()
        while self._bytes[tenant] > self._max_bytes or _expired(entries, now):
            self._forget(tenant, next(iter(entries)))

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        entries = self._tenants.get(tenant)
        found = entries.get(response_id) if entries is not None else None
        if entries is None or found is None:
            return None
        if found[0] < self._clock():
            self._forget(tenant, response_id)
            return None
        entries.move_to_end(response_id)
        return found[1]

    async def close(self) -> None:
        return None

    def _forget(self, tenant: str, response_id: str) -> None:
        _, document = self._tenants[tenant].pop(response_id)
        self._bytes[tenant] -= len(document) + len(response_id) + ENTRY_OVERHEAD_BYTES


def _expired(entries: OrderedDict[str, tuple[float, bytes]], now: float) -> bool:
    """The least recently used entry has expired (then it goes; expired entries further in are
    found by their own lookup)."""
    return bool(entries) and next(iter(entries.values()))[0] < now


class RedisConversations:
    """Shared by every replica: one key per entry, tenant and id in its name, retention as its
    expiry."""

    def __init__(
        self, state: SharedState, *, retention_s: float = DEFAULT_RETENTION_S, max_bytes: int
    ) -> None:
        self.retention_s = retention_s
        self._state = state
        self._max_bytes = max_bytes
        state.register(_nothing_to_put_back)  # what is lost is lost: only its id stops working

    async def put(self, tenant: str, response_id: str, document: bytes) -> None:
        if len(document) > self._max_bytes or self.retention_s <= 0:
            return
        try:
            await self._state.redis.set(
                _key(tenant, response_id), document, ex=max(1, int(self.retention_s))
            )
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc

    async def get(self, tenant: str, response_id: str) -> bytes | None:
        try:
            found: Any = await self._state.redis.get(_key(tenant, response_id))
        except (RedisError, OSError) as exc:
            raise unreachable(exc) from exc
        return bytes(found) if found is not None else None

    async def close(self) -> None:
        await self._state.close()


def _key(tenant: str, response_id: str) -> str:
    # a tenant name may hold ':'; its length first keeps two tenants' key spaces apart
    return f"{PREFIX}{len(tenant)}:{tenant}:{response_id}"


async def _nothing_to_put_back(epoch: str) -> None:
    return None
