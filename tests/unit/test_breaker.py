"""The circuit breakers of one provider, driven by a hand-held clock (no sleeps).

What counts towards which breaker is the point: one tenant's failing requests must not take the
provider away from the others; back-pressure and client errors open nothing.
"""

from __future__ import annotations

import pytest

from passerelle.errors import (
    ProviderError,
    ProviderFailedError,
    ProviderTimeoutError,
    ProviderUnreachableError,
)
from passerelle.providers.resilience import Breaker, CircuitBreaker, Fault, classify
from passerelle.providers.upstream_errors import from_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breakers(clock: Clock, failures: int = 5) -> CircuitBreaker:
    return CircuitBreaker(failures=failures, cooldown_s=30.0, clock=clock)


def test_a_breaker_opens_after_its_threshold_and_lets_one_trial_through_after_cooldown(
    clock: Clock,
) -> None:
    b = Breaker(failures=3, cooldown_s=30.0, clock=clock)
    for _ in range(3):
        assert b.allow()
        b.failure()
    assert b.wait_s() > 0 and not b.allow()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow()  # the trial
    assert not b.allow()  # only one at a time
    b.failure()
    assert not b.allow()  # reopened for another cooldown
    clock.now += 30.1
    assert b.allow()
    b.success()
    assert b.wait_s() == 0 and b.allow() and b.allow()


def test_one_tenant_failing_alone_is_cut_off_alone(clock: Clock) -> None:
    cb = breakers(clock)
    for _ in range(8):
        if cb.allow("mallory"):
            cb.failure("mallory", Fault.ANSWER)
    assert not cb.allow("mallory")
    assert cb.allow("acme")  # every other tenant keeps the provider
    cb.success("acme")
    assert not cb.allow("mallory")  # another tenant's success does not reopen mallory's
    clock.now += 30.1
    assert cb.allow("mallory")  # its own half-open trial


def test_a_tenant_counts_for_at_most_half_the_threshold_of_the_shared_breaker(
    clock: Clock,
) -> None:
    cb = breakers(clock, failures=5)
    for _ in range(5):
        cb.failure("mallory", Fault.ANSWER)
    cb.failure("acme", Fault.ANSWER)  # one transient failure of another tenant: 3 + 1 < 5
    assert cb.allow("globex")
    cb.failure("acme", Fault.ANSWER)  # 3 + 2: two tenants fail together, the provider is sick
    assert not cb.allow("globex")
    clock.now += 30.1
    assert cb.allow("globex")  # the shared trial
    cb.success("globex")
    assert cb.allow("acme")


def test_failures_spread_over_tenants_open_the_shared_breaker(clock: Clock) -> None:
    cb = breakers(clock, failures=4)
    for tenant in ["a", "b", "a", "b"]:
        assert cb.allow(tenant)
        cb.failure(tenant, Fault.ANSWER)
    assert not cb.allow("c")


def test_a_success_ends_the_shared_run_of_failures(clock: Clock) -> None:
    cb = breakers(clock, failures=4)
    for tenant in ["a", "b", "a"]:
        cb.failure(tenant, Fault.ANSWER)
    cb.success("c")
    for tenant in ["a", "b", "a"]:
        cb.failure(tenant, Fault.ANSWER)
    assert cb.allow("c")


def test_an_unreachable_provider_is_closed_for_everyone(clock: Clock) -> None:
    cb = breakers(clock, failures=3)
    for _ in range(3):
        cb.failure("acme", Fault.PROVIDER)
    assert not cb.allow("globex")


def test_back_pressure_and_client_errors_open_nothing(clock: Clock) -> None:
    cb = breakers(clock, failures=2)
    for _ in range(50):
        cb.failure("acme", Fault.NONE)
        cb.failure("globex", Fault.NONE)
    assert cb.allow("acme") and cb.allow("globex")


def test_a_verdictless_attempt_frees_the_half_open_trial(clock: Clock) -> None:
    cb = breakers(clock, failures=1)
    cb.failure("acme", Fault.PROVIDER)
    clock.now += 30.1
    assert cb.allow("acme")  # the trial
    assert not cb.allow("globex")
    cb.failure("acme", Fault.NONE)  # a 429: no verdict, the trial is free again
    assert cb.allow("globex")


def _error(status: int, retry_after: str | None = None) -> ProviderError:
    return from_status("p", status, message="x", retry_after=retry_after)


def test_what_counts_as_what() -> None:
    assert classify(_error(429)) is Fault.NONE
    assert classify(_error(503, retry_after="7")) is Fault.NONE
    assert classify(_error(529)) is Fault.NONE
    assert classify(_error(400)) is Fault.NONE
    assert classify(_error(404)) is Fault.NONE  # this upstream does not know the model
    assert classify(_error(500)) is Fault.ANSWER
    assert classify(_error(503)) is Fault.ANSWER
    assert classify(ProviderTimeoutError("x", provider="p")) is Fault.ANSWER
    assert classify(ProviderFailedError("reset", provider="p")) is Fault.ANSWER
    assert classify(ProviderUnreachableError("refused", provider="p")) is Fault.PROVIDER
    assert classify(_error(401)) is Fault.PROVIDER  # the gateway's key: wrong for everyone


def test_tenant_breakers_are_bounded(clock: Clock) -> None:
    cb = breakers(clock, failures=5)
    for i in range(30_000):
        cb.failure(f"t{i}", Fault.ANSWER)
        cb.success(f"t{i}")
    assert len(cb._tenants) <= 10_000


def test_reading_a_breaker_never_claims_its_half_open_trial(clock: Clock) -> None:
    cb = breakers(clock, failures=1)
    cb.failure("acme", Fault.PROVIDER)
    assert cb.wait_s("acme", "m") == pytest.approx(30.0)
    clock.now += 30.1
    for _ in range(5):  # a router may look as often as it likes
        assert cb.wait_s("acme", "m") == 0.0
    assert cb.allow("acme")  # the attempt that goes claims it
    assert cb.wait_s("globex", "m") > 0  # while it is in flight, nobody else may go
    assert not cb.allow("globex")
    cb.success("acme")
    assert cb.wait_s("globex", "m") == 0.0


def test_a_retry_after_cools_the_target_until_then_and_opens_nothing(clock: Clock) -> None:
    cb = breakers(clock, failures=1)
    cb.cool("gpt-4o-mini", 2.0)
    cb.failure("acme", Fault.NONE)
    assert cb.wait_s("acme", "gpt-4o-mini") == pytest.approx(2.0)
    assert cb.wait_s("globex", "gpt-4o-mini") == pytest.approx(2.0)  # for every call
    assert cb.wait_s("acme", "gpt-4o") == 0.0  # another model of the provider is not cooling
    clock.now += 1.5
    assert cb.wait_s("acme", "gpt-4o-mini") == pytest.approx(0.5)
    cb.cool("gpt-4o-mini", 0.2)  # a shorter wait said later does not shorten the first
    assert cb.wait_s("acme", "gpt-4o-mini") == pytest.approx(0.5)
    clock.now += 0.6
    assert cb.wait_s("acme", "gpt-4o-mini") == 0.0
    assert cb.allow("acme")  # and the breaker never opened


def test_the_wait_is_the_longer_of_cooling_and_an_open_breaker(clock: Clock) -> None:
    cb = breakers(clock, failures=1)
    cb.failure("acme", Fault.PROVIDER)
    cb.cool("m", 5.0)
    assert cb.wait_s("acme", "m") == pytest.approx(30.0)
    clock.now += 30.1
    cb.cool("m", 3.0)
    assert cb.wait_s("acme", "m") == pytest.approx(3.0)


def test_cooling_is_bounded(clock: Clock) -> None:
    cb = breakers(clock)
    for i in range(30_000):
        cb.cool(f"m{i}", 1.0)
        clock.now += 0.01
    assert len(cb._cool_until) <= 10_000
