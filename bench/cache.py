"""The exact cache at scale: key time, lookup time and memory per entry at 100,000 entries.

    .venv/bin/python bench/cache.py [--entries N] [--redis URL | --no-redis]

In process, with no gateway around it: the key of a short request and of a long conversation
(canonical JSON and SHA-256, ``pipeline/cache_key.py``), then a store filled with N entries of a
typical plain answer (``store/answers.py``): the time of a lookup that hits and of one that
misses, and the memory the store holds per entry (tracemalloc, the entry's bytes included). With
Redis (a database of its own: ``--redis``, default DB 15; its keys deleted at the end) the same
lookups over loopback, and what Redis holds per entry (``used_memory`` before and after).
Numbers are printed; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from passerelle.pipeline.cache_key import exact_key  # noqa: E402
from passerelle.pipeline.cached import CachedAnswer  # noqa: E402
from passerelle.pipeline.context import Call  # noqa: E402
from passerelle.pipeline.targets import Route  # noqa: E402
from passerelle.store.answers import Bounds, LocalAnswers, RedisAnswers  # noqa: E402
from passerelle.store.redis import SharedState  # noqa: E402

ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"'
    + b"Paris is the capital of France. " * 12
    + b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":96}}'
)


def per_call_us(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def key_times() -> dict[str, float]:
    route = Route(model="gpt-4o-mini", targets=())
    short = Call(endpoint="chat.completions", headers={}, raw_body=b"")
    short.body = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}],
    }
    long = Call(endpoint="chat.completions", headers={}, raw_body=b"")
    turns = [{"role": "user" if i % 2 else "assistant", "content": "word " * 80} for i in range(50)]
    long.body = {"model": "gpt-4o-mini", "temperature": 0, "messages": turns}
    short.resolved(route)
    long.resolved(route)
    return {
        "short request": per_call_us(lambda: exact_key(short, per_user=False), 20_000),
        "50-turn conversation (~20 KB)": per_call_us(
            lambda: exact_key(long, per_user=False), 2_000
        ),
    }


def entry(i: int) -> bytes:
    return CachedAnswer(
        tenant="acme",
        body=ANSWER,
        events=None,
        target="fake/gpt-4o-mini",
        cost_pusd=1000,
        request_id=f"req_{i:016x}",
    ).dumps()


async def lookups(store: Any, keys: list[str], n: int) -> tuple[float, float]:
    """Median microseconds of a hit and of a miss."""
    hits, misses = [], []
    for i in range(n):
        t0 = time.perf_counter()
        assert await store.get(keys[(i * 7919) % len(keys)]) is not None
        t1 = time.perf_counter()
        assert await store.get(uuid.uuid4().hex) is None
        t2 = time.perf_counter()
        hits.append(t1 - t0)
        misses.append(t2 - t1)
    return statistics.median(hits) * 1e6, statistics.median(misses) * 1e6


async def local(n: int) -> dict[str, float]:
    bounds = Bounds(ttl_s=3600, max_entries=n, max_bytes=10**10)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = LocalAnswers(bounds)
    keys = [uuid.uuid4().hex * 2 for _ in range(n)]
    for i, k in enumerate(keys):
        await store.put(k, entry(i))
    held = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(keys)  # the list is ours
    tracemalloc.stop()
    hit, miss = await lookups(store, keys, 20_000)
    size = len(entry(0))
    return {
        "entries": len(store),
        "bytes_per_entry": held / n,
        "hit_us": hit,
        "miss_us": miss,
        "entry_bytes": size,
    }


async def shared(url: str, n: int) -> dict[str, float]:
    state = SharedState(url)
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    store = RedisAnswers(state, Bounds(ttl_s=3600, max_entries=n, max_bytes=10**10), namespace=ns)
    redis = state.redis
    before = int((await redis.info("memory"))["used_memory"])
    keys = [uuid.uuid4().hex * 2 for _ in range(n)]
    try:
        t0 = time.perf_counter()
        for i, k in enumerate(keys):
            await store.put(k, entry(i))
        put_us = (time.perf_counter() - t0) / n * 1e6
        used = int((await redis.info("memory"))["used_memory"]) - before
        hit, miss = await lookups(store, keys, 5_000)
    finally:
        stale = [k async for k in redis.scan_iter(f"passerelle:cache:{ns}:*", count=10_000)]
        for i in range(0, len(stale), 10_000):
            await redis.delete(*stale[i : i + 10_000])
        await store.close()
    return {"bytes_per_entry": used / n, "put_us": put_us, "hit_us": hit, "miss_us": miss}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    p.add_argument("--no-redis", action="store_true")
    args = p.parse_args()
    for what, us in key_times().items():
        print(f"key of a {what}: {us:.1f} µs")
    got = asyncio.run(local(args.entries))
    print(
        f"in process, {got['entries']:,} entries of {got['entry_bytes']:,} bytes: lookup "
        f"{got['hit_us']:.1f} µs (hit), {got['miss_us']:.1f} µs (miss); "
        f"{got['bytes_per_entry']:,.0f} bytes held per entry"
    )
    if not args.no_redis:
        r = asyncio.run(shared(args.redis, args.entries))
        print(
            f"Redis ({args.redis}), {args.entries:,} entries: put {r['put_us']:.0f} µs, lookup "
            f"{r['hit_us']:.0f} µs (hit), {r['miss_us']:.0f} µs (miss) over loopback; "
            f"{r['bytes_per_entry']:,.0f} bytes of Redis memory per entry"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
