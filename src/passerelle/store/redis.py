"""The Redis client shared state uses: a bounded, blocking pool.

Under a burst, requests wait briefly for one of a few dozen connections instead of opening one
each (Redis answers each script in microseconds; hundreds of sockets only add contention).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

MAX_CONNECTIONS = 64
WAIT_S = 5.0


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
