"""The shared breaker's scripts against a real Redis, two replicas in one process.

The replicas' clock is held by hand (how stale a copy may be); Redis's own clock times the
breaker, so the cooldown here is 0 and the trial is due at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from passerelle.errors import ProviderBackPressureError, ProviderError, ProviderUnreachableError
from passerelle.providers.shared_breakers import READ_TTL_S, RETRY_S, Scripts, SharedHealth
from tests.unit.test_breaker import Clock


def refused() -> ProviderError:
    exc = ProviderUnreachableError("refused", provider="p")
    return exc


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[Scripts]:
    s = Scripts(url)
    try:
        yield s
    finally:
        await s.close()


def pair(scripts: Scripts, clock: Clock, cooldown_s: float = 0.0) -> tuple[SharedHealth, ...]:
    name = "p" + uuid.uuid4().hex[:8]
    return tuple(
        SharedHealth(scripts, name, failures=2, cooldown_s=cooldown_s, clock=clock)
        for _ in range(2)
    )


async def test_failures_on_one_replica_open_the_breaker_on_the_other(redis_url: str) -> None:
    async with opened(redis_url) as scripts:
        clock = Clock()
        a, b = pair(scripts, clock, cooldown_s=60)
        assert await b.wait_s("acme", "m") == 0.0
        await a.failed("acme", "m", refused())
        await a.failed("globex", "m", refused())
        assert await b.wait_s("acme", "m") == 0.0  # B's copy is still fresh: not read again yet
        clock.now += READ_TTL_S
        assert 59 < await b.wait_s("acme", "m") <= 60
        assert not await b.claim("acme")


async def test_the_trial_is_claimed_once_across_replicas_and_reading_claims_nothing(
    redis_url: str,
) -> None:
    async with opened(redis_url) as scripts:
        clock = Clock()
        a, b = pair(scripts, clock)
        await a.failed("acme", "m", refused())
        await a.failed("acme", "m", refused())  # open; with cooldown 0 the trial is due
        for _ in range(3):
            assert await b.wait_s("globex", "m") == 0.0
            clock.now += READ_TTL_S
        assert await b.claim("globex")  # the attempt that goes
        clock.now += READ_TTL_S
        assert await a.wait_s("initech", "m") > 0  # the trial is taken
        assert not await a.claim("initech")
        await b.succeeded("globex")
        clock.now += READ_TTL_S
        assert await a.wait_s("initech", "m") == 0.0 and await a.claim("initech")


async def test_a_retry_after_cools_the_target_on_every_replica(redis_url: str) -> None:
    async with opened(redis_url) as scripts:
        clock = Clock()
        a, b = pair(scripts, clock)
        limited = ProviderBackPressureError("slow down", provider="p", status=429, retry_after="30")
        await a.failed("acme", "m", limited)
        assert 29 < await b.wait_s("globex", "m") <= 30
        assert await b.wait_s("globex", "other") == 0.0
        assert await b.claim("globex")  # back-pressure opened nothing


async def test_a_closed_breaker_costs_one_read_per_interval(redis_url: str) -> None:
    async with opened(redis_url) as scripts:
        clock = Clock()
        (a, _) = pair(scripts, clock)
        calls: list[str] = []

        def counting(name: str, script: Any) -> Any:
            async def counted(**kw: object) -> object:
                calls.append(name)
                return await script(**kw)

            return counted

        for name in ("read", "claim", "success", "failure"):
            setattr(scripts, name, counting(name, getattr(scripts, name)))
        for _ in range(100):
            assert await a.wait_s("acme", "m") == 0.0
            assert await a.claim("acme")
            await a.succeeded("acme")
        assert calls == ["read"]  # a closed breaker: one read, no transition goes to Redis


async def test_with_redis_the_shared_run_decides_not_one_replicas_view(redis_url: str) -> None:
    async with opened(redis_url) as scripts:
        clock = Clock()
        a, b = pair(scripts, clock, cooldown_s=60)
        await a.failed("acme", "m", refused())
        clock.now += READ_TTL_S
        assert await b.wait_s("globex", "m") == 0.0  # B sees the failure counted...
        await b.succeeded("globex")  # ...and its success ends the run for everyone
        await a.failed("acme", "m", refused())  # A's second failure in a row, not the provider's
        assert await a.wait_s("acme", "m") == 0.0
        assert await a.claim("acme")


async def test_unreachable_redis_falls_back_to_the_local_breaker_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scripts = Scripts(f"redis://127.0.0.1:{port}/0")
    clock = Clock()
    (a, _) = pair(scripts, clock, cooldown_s=60)
    caplog.set_level(logging.WARNING, logger="passerelle.breakers")
    try:
        for _ in range(3):
            assert await a.wait_s("acme", "m") == 0.0  # never refused for want of Redis
            assert await a.claim("acme")
            clock.now += RETRY_S
        await a.failed("acme", "m", refused())
        await a.failed("acme", "m", refused())
        assert await a.wait_s("acme", "m") > 0  # the local breaker still opens
    finally:
        await scripts.close()
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
