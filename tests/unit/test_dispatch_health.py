"""Dispatch with breakers and cooling on a hand-held clock: a cooldown is waited out by moving the
clock, never by sleeping, and nothing here reads the wall clock."""

from __future__ import annotations

import pytest

from passerelle.errors import (
    ProviderBackPressureError,
    ProviderError,
    ProviderFailedError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
)
from passerelle.pipeline.dispatch import Dispatch
from passerelle.pipeline.targets import Route
from tests.unit.stages import Clock, FakeNext, ScriptedProvider, call, serve, target

COOLDOWN_S = 30.0


def broken(name: str) -> ProviderError:
    return ProviderFailedError("upstream said 500", provider=name, status=500)


def limited(name: str, after_s: str) -> ProviderError:
    return ProviderBackPressureError(
        "upstream said 429", provider=name, status=429, retry_after=after_s
    )


async def test_an_open_breaker_refuses_until_its_cooldown_then_a_trial_closes_it() -> None:
    clock = Clock()
    flaky = ScriptedProvider("flaky", broken("flaky"), broken("flaky"), "back")
    r = Route("m", (target("m", provider=flaky, clock=clock, failures=2, cooldown_s=COOLDOWN_S),))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await serve(Dispatch(), call(route=r), FakeNext())
    assert flaky.requests == 2

    for _ in range(3):  # open: refused at the gateway, nothing sent upstream
        with pytest.raises(ServiceUnavailableError) as caught:
            await serve(Dispatch(), call(route=r), FakeNext())
        assert caught.value.code == "providers_unavailable"
        assert int(caught.value.headers["retry-after"]) == COOLDOWN_S
    assert flaky.requests == 2

    clock.now += COOLDOWN_S + 0.1  # half-open: one trial goes, its success closes the breaker
    for _ in range(2):
        downstream = FakeNext()
        await serve(Dispatch(), call(route=r), downstream)
        assert downstream.reached == 1
    assert flaky.requests == 4


async def test_a_failed_trial_opens_the_breaker_again_at_once() -> None:
    clock = Clock()
    flaky = ScriptedProvider("flaky", *[broken("flaky")] * 3, "back")
    r = Route("m", (target("m", provider=flaky, clock=clock, failures=2, cooldown_s=COOLDOWN_S),))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await serve(Dispatch(), call(route=r), FakeNext())
    clock.now += COOLDOWN_S + 0.1
    with pytest.raises(UpstreamError):  # the trial, failing
        await serve(Dispatch(), call(route=r), FakeNext())
    with pytest.raises(ServiceUnavailableError):  # open again, without waiting
        await serve(Dispatch(), call(route=r), FakeNext())
    assert flaky.requests == 3
    clock.now += COOLDOWN_S + 0.1
    await serve(Dispatch(), call(route=r), FakeNext())  # and a successful trial closes it
    await serve(Dispatch(), call(route=r), FakeNext())
    assert flaky.requests == 5


async def test_a_rate_limit_cools_its_target_for_its_retry_after_and_opens_no_breaker() -> None:
    clock = Clock()
    busy = ScriptedProvider("limited", limited("limited", "2"), "from limited")
    spare = ScriptedProvider("spare", "from spare")
    r = Route(
        "m",
        (
            target("m", provider=busy, clock=clock, failures=1, max_retries=1),
            target("m", provider=spare, clock=clock),
        ),
    )
    c = call(route=r)
    await serve(Dispatch(), c, FakeNext())
    assert c.target is not None and c.target.label == "spare/m"  # no retry before its Retry-After
    clock.now += 1
    c = call(route=r)
    await serve(Dispatch(), c, FakeNext())
    assert c.target is not None and c.target.label == "spare/m"  # still cooling: untouched
    assert busy.requests == 1
    clock.now += 1.1  # its Retry-After is over; with failures=1 a breaker would still be open
    c = call(route=r)
    await serve(Dispatch(), c, FakeNext())
    assert c.target is not None and c.target.label == "limited/m" and busy.requests == 2


async def test_a_lone_rate_limited_target_passes_on_the_upstream_s_429() -> None:
    clock = Clock()
    solo = ScriptedProvider("solo", limited("solo", "2"))
    r = Route("m", (target("m", provider=solo, clock=clock, failures=1, max_retries=1),))
    with pytest.raises(RateLimitError) as caught:
        await serve(Dispatch(), call(route=r), FakeNext())
    assert caught.value.headers["retry-after"] == "2" and solo.requests == 1
    with pytest.raises(ServiceUnavailableError) as cooling:  # then 503 until it is over
        await serve(Dispatch(), call(route=r), FakeNext())
    assert cooling.value.headers["retry-after"] == "2" and solo.requests == 1
