"""The answer cache's store: entries expire, and the bounds on entries and bytes always hold.

In one process on a hand-held clock; on Redis shared by two stores as two replicas would share
it, each test in a namespace of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from passerelle.store.answers import (
    ENTRY_OVERHEAD_BYTES,
    REDIS_ENTRY_OVERHEAD_BYTES,
    Bounds,
    LocalAnswers,
    RedisAnswers,
)
from passerelle.store.redis import SharedState
from tests.unit.stages import Clock

pytestmark = pytest.mark.asyncio(loop_scope="function")


def size(key: str, entry: bytes, overhead: int = ENTRY_OVERHEAD_BYTES) -> int:
    return len(key) + len(entry) + overhead


async def test_an_entry_expires_after_its_lifetime() -> None:
    clock = Clock(100.0)
    store = LocalAnswers(Bounds(ttl_s=60, max_entries=10, max_bytes=10_000), clock)
    await store.put("k", b"answer")
    clock.now = 159.9
    assert await store.get("k") == b"answer"
    clock.now = 160.0
    assert await store.get("k") is None
    assert len(store) == 0 and store.held_bytes == 0


async def test_past_the_entry_bound_the_least_recently_used_goes_first() -> None:
    store = LocalAnswers(Bounds(ttl_s=60, max_entries=2, max_bytes=10_000), Clock())
    await store.put("a", b"1")
    await store.put("b", b"2")
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.put("c", b"3")
    assert [await store.get(k) for k in "abc"] == [b"1", None, b"3"]
    assert len(store) == 2


async def test_the_byte_bound_holds_and_an_oversized_entry_is_not_kept() -> None:
    bound = 3 * size("k0", b"x" * 100)
    store = LocalAnswers(Bounds(ttl_s=60, max_entries=100, max_bytes=bound), Clock())
    for i in range(10):
        await store.put(f"k{i}", b"x" * 100)
        assert store.held_bytes <= bound
    assert len(store) == 3
    assert [await store.get(f"k{i}") is not None for i in range(10)] == [False] * 7 + [True] * 3
    await store.put("huge", b"x" * bound)
    assert await store.get("huge") is None and len(store) == 3


async def test_putting_a_key_again_replaces_its_entry_and_its_size() -> None:
    store = LocalAnswers(Bounds(ttl_s=60, max_entries=10, max_bytes=10_000), Clock())
    await store.put("k", b"a" * 50)
    await store.put("k", b"b")
    assert await store.get("k") == b"b"
    assert store.held_bytes == size("k", b"b")


Replicas = Callable[[int, Bounds, str], RedisAnswers]


@pytest_asyncio.fixture(loop_scope="function")
async def replicas(redis_url: str) -> AsyncIterator[Replicas]:
    """``replicas(i, bounds, namespace)``: a store on replica ``i``'s link to Redis (0 or 1)."""
    states = [SharedState(redis_url), SharedState(redis_url)]
    made: list[tuple[int, RedisAnswers]] = []
    namespaces: set[str] = set()

    def make(i: int, bounds: Bounds, namespace: str) -> RedisAnswers:
        made.append((i, RedisAnswers(states[i], bounds, namespace=namespace)))
        namespaces.add(namespace)
        return made[-1][1]

    yield make
    for ns in namespaces:
        keys = [k async for k in states[0].redis.scan_iter(f"passerelle:cache:{ns}:*")]
        if keys:
            await states[0].redis.delete(*keys)
    for _, store in made:
        await store.close()  # the last store of a state closes its client
    for i in {0, 1} - {i for i, _ in made}:
        await states[i].close()


async def test_on_redis_one_replica_reads_what_the_other_stored_until_it_expires(
    replicas: Replicas, redis_url: str
) -> None:
    ns = "t" + uuid.uuid4().hex
    bounds = Bounds(ttl_s=30, max_entries=10, max_bytes=10_000)
    one, other = replicas(0, bounds, ns), replicas(1, bounds, ns)
    await one.put("k", b"answer")
    assert await other.get("k") == b"answer"
    assert await other.get("unknown") is None
    redis = Redis.from_url(redis_url)
    try:
        ttl_ms = await redis.pttl(f"passerelle:cache:{ns}:k")
    finally:
        await redis.aclose()
    assert 0 < ttl_ms <= 30_000  # Redis expires it: no clock of ours to trust


async def test_on_redis_the_bounds_hold_across_replicas_oldest_first(replicas: Replicas) -> None:
    ns = "t" + uuid.uuid4().hex
    entry = b"x" * 100
    bound = 4 * size(f"passerelle:cache:{ns}:k00", entry, REDIS_ENTRY_OVERHEAD_BYTES)
    bounds = Bounds(ttl_s=30, max_entries=6, max_bytes=bound)
    stores = replicas(0, bounds, ns), replicas(1, bounds, ns)
    for i in range(20):
        await stores[i % 2].put(f"k{i:02}", entry)
        entries, held = await stores[0].held()
        assert entries <= 6 and held <= bound
    assert entries == 4 and held == bound  # the byte bound binds first here
    found = [await stores[1].get(f"k{i:02}") is not None for i in range(20)]
    assert found == [False] * 16 + [True] * 4
    small = Bounds(ttl_s=30, max_entries=2, max_bytes=10**6)
    few = replicas(0, small, ns)
    await few.put("k99", b"y")
    assert (await few.held())[0] == 2  # the entry bound too, whoever stored before
    await few.put("huge", b"z" * 10**6)
    assert await few.get("huge") is None
