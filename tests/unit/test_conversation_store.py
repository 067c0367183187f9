"""Kept responses (``store/conversations.py``): found only by their tenant, gone after their
retention, bounded per tenant in process; the same contract on Redis."""

from __future__ import annotations

import secrets

import pytest

from passerelle.store.conversations import LocalConversations, RedisConversations
from passerelle.store.redis import SharedState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_response_is_found_by_its_tenant_only() -> None:
    store = LocalConversations()
    await store.put("acme", "resp_1", b'{"a":1}')
    assert await store.get("acme", "resp_1") == b'{"a":1}'
    assert await store.get("globex", "resp_1") is None
    assert await store.get("acme", "resp_2") is None


async def test_a_response_is_gone_after_its_retention() -> None:
    clock = Clock()
    store = LocalConversations(retention_s=60, clock=clock)
    await store.put("acme", "resp_1", b"{}")
    clock.now += 59
    assert await store.get("acme", "resp_1") == b"{}"
    clock.now += 2
    assert await store.get("acme", "resp_1") is None
    assert store.held_bytes("acme") == 0


async def test_each_tenant_is_bounded_least_recently_used_first_without_touching_others() -> None:
    store = LocalConversations(max_bytes=3 * (100 + 6 + 128))
    await store.put("globex", "resp_g", b"x" * 100)
    for n in range(3):
        await store.put("acme", f"resp_{n}", b"x" * 100)
    assert await store.get("acme", "resp_0") is not None  # now the most recently used
    await store.put("acme", "resp_3", b"x" * 100)
    assert await store.get("acme", "resp_1") is None  # the least recently used went
    assert [await store.get("acme", f"resp_{n}") is not None for n in (0, 2, 3)] == [True] * 3
    assert await store.get("globex", "resp_g") is not None
    assert store.held_bytes("acme") <= 3 * (100 + 6 + 128)


async def test_a_response_larger_than_the_bound_or_with_no_retention_is_not_kept() -> None:
    store = LocalConversations(max_bytes=500)
    await store.put("acme", "resp_big", b"x" * 1000)
    assert await store.get("acme", "resp_big") is None
    off = LocalConversations(retention_s=0)
    await off.put("acme", "resp_1", b"{}")
    assert await off.get("acme", "resp_1") is None


@pytest.mark.redis
async def test_on_redis_a_response_is_shared_per_tenant_and_expires(redis_url: str) -> None:
    one = RedisConversations(SharedState(redis_url), retention_s=30, max_bytes=1000)
    other = RedisConversations(SharedState(redis_url), retention_s=30, max_bytes=1000)
    rid = f"resp_{secrets.token_hex(8)}"
    try:
        await one.put("acme", rid, b'{"a":1}')
        assert await other.get("acme", rid) == b'{"a":1}'  # another replica sees it
        assert await other.get("globex", rid) is None
        assert await other.get("acm", rid) is None  # a name's prefix is another tenant
        await one.put("acme", rid + "big", b"x" * 2000)
        assert await one.get("acme", rid + "big") is None
        keys = [k async for k in one._state.redis.scan_iter(match=f"*{rid}")]
        assert len(keys) == 1
        assert 0 < await one._state.redis.ttl(keys[0]) <= 30
    finally:
        await one.close()
        await other.close()
