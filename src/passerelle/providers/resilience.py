"""Retries with backoff, and circuit breakers that one tenant cannot trip for everyone.

A ``Breaker`` opens after ``failures`` consecutive failed attempts and keeps traffic away for
``cooldown_s``; then one trial request is let through (half-open): success closes it, failure
opens it again.

A provider has one shared breaker and one per tenant (``CircuitBreaker``). Which one a failed
attempt counts towards depends on what failed (``Fault``):

- back-pressure (a 429, an overloaded provider, a 503 with ``Retry-After``) and rejections of
  the request (400, 404, 413, 422...) say nothing about the provider's health: no breaker moves.
- a connection that could not be opened (refused, unreachable, DNS), or the gateway's own
  credentials refused (401, 403), is the provider's health whatever the request held: it counts
  towards the shared breaker.
- any other failure (a 5xx answer, a timeout, a reset, a truncated stream, invalid JSON) may be
  caused by what the request asked for, so it counts towards the tenant's own breaker, and
  towards the shared one only once it is seen from more than one tenant: the shared breaker
  opens when at least two tenants failed in its current run of failures and each tenant counts
  for at most half the threshold (rounded up). A tenant whose requests alone fail is cut off
  alone; every other tenant keeps the provider at its price.

A rate limit is back-pressure with a date: its ``Retry-After`` cools that target (the provider's
upstream model) until then, for every call, and opens no breaker (``cool``). ``wait_s`` reads all
of it without claiming anything: how long until a request may go (0: now), so dispatch and a
router skip targets that are open or cooling; ``allow`` is for the attempt that goes, and claims
a due half-open trial.

The clock is injected; the unit tests drive it by hand. ``TargetHealth`` is what dispatch uses:
``LocalHealth`` in one process, ``providers/shared_breakers.py`` across replicas with Redis.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

from passerelle.errors import (
    ProviderBackPressureError,
    ProviderCredentialError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnreachableError,
)

MAX_TENANT_BREAKERS = 10_000
MAX_COOLING = 10_000
TRIAL_WAIT_S = 1.0  # what a caller is told while another request holds the half-open trial


class Fault(enum.Enum):
    NONE = "none"  # back-pressure or the client's own error: no verdict on the provider
    PROVIDER = "provider"  # the provider could not be reached at all
    ANSWER = "answer"  # the provider answered badly, perhaps because of the request


def classify(exc: ProviderError) -> Fault:
    if isinstance(exc, ProviderBackPressureError | ProviderRejectedError):
        return Fault.NONE
    if isinstance(exc, ProviderUnreachableError | ProviderCredentialError):
        return Fault.PROVIDER
    return Fault.ANSWER


class Breaker:
    """Consecutive failures open it for a cooldown; then one half-open trial decides."""

    def __init__(
        self, *, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._open_until = 0.0
        self._trial_in_flight = False

    def wait_s(self) -> float:
        """Seconds until a request may go (0: now). Reads only: claims no trial."""
        if self._consecutive < self._threshold:
            return 0.0
        left = self._open_until - self._clock()
        if left > 0:
            return left
        return TRIAL_WAIT_S if self._trial_in_flight else 0.0

    @property
    def idle(self) -> bool:
        """Closed with nothing counted: forgetting it changes nothing."""
        return self._consecutive == 0 and not self._trial_in_flight

    def allow(self) -> bool:
        """May a request go through now? Claims the half-open trial when it is due."""
        if self._consecutive < self._threshold:
            return True
        if self._clock() < self._open_until or self._trial_in_flight:
            return False
        self._trial_in_flight = True
        return True

    def success(self) -> None:
        self._consecutive = 0
        self._trial_in_flight = False

    def abandon(self) -> None:
        """An attempt ended without a verdict: free the trial."""
        self._trial_in_flight = False

    def failure(self) -> None:
        self._consecutive += 1
        self._trial_in_flight = False
        if self._consecutive >= self._threshold:
            self._open_until = self._clock() + self._cooldown

    def trip(self) -> None:
        """Open now, as if the threshold had been reached."""
        self._consecutive = max(self._consecutive, self._threshold - 1)
        self.failure()


class CircuitBreaker:
    """One provider's breakers: shared by all tenants, and one per tenant (see the module)."""

    def __init__(
        self, *, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures = failures
        self._cooldown = cooldown_s
        self._clock = clock
        self._shared = Breaker(failures=failures, cooldown_s=cooldown_s, clock=clock)
        self._tenants: dict[str, Breaker] = {}
        self._run: dict[str, int] = {}  # the shared run of answer failures, per tenant
        self._per_tenant_cap = max(1, math.ceil(failures / 2))
        self._cool_until: dict[str, float] = {}  # upstream model -> clock time

    def wait_s(self, tenant: str | None, model: str, *, shared: bool = True) -> float:
        """Seconds until this tenant's request to ``model`` may go (0: now); claims nothing."""
        own = self._tenants.get(tenant or "")
        wait = max(
            self._shared.wait_s() if shared else 0.0, own.wait_s() if own is not None else 0.0
        )
        until = self._cool_until.get(model)
        if until is not None:
            left = until - self._clock()
            if left <= 0:
                del self._cool_until[model]
            wait = max(wait, left)
        return wait

    def cool(self, model: str, seconds: float) -> None:
        """The provider said not before ``seconds`` for ``model``: nobody tries it until then."""
        now = self._clock()
        if len(self._cool_until) >= MAX_COOLING:  # bounded: forget the ones that are over
            self._cool_until = {m: t for m, t in self._cool_until.items() if t > now}
            if len(self._cool_until) >= MAX_COOLING:
                return
        self._cool_until[model] = max(self._cool_until.get(model, 0.0), now + seconds)

    def allow(self, tenant: str | None, *, shared: bool = True) -> bool:
        """May this tenant's request go to the provider now? Claims a due half-open trial.
        ``shared=False``: the shared breaker is kept elsewhere (Redis), only the tenant's counts."""
        own = self._tenants.get(tenant or "")  # only tenants with failures have one
        if own is not None and not own.allow():
            return False
        if shared and not self._shared.allow():
            if own is not None:
                own.abandon()
            return False
        return True

    def success(self, tenant: str | None) -> None:
        self._shared.success()
        self._run.clear()
        own = self._tenants.get(tenant or "")
        if own is not None:
            own.success()
            if own.idle:
                del self._tenants[tenant or ""]

    def abandon(self, tenant: str | None) -> None:
        """An attempt ended without a verdict (cancelled, back-pressure, a client error)."""
        self._shared.abandon()
        own = self._tenants.get(tenant or "")
        if own is not None:
            own.abandon()

    def failure(self, tenant: str | None, fault: Fault) -> None:
        if fault is Fault.NONE:
            self.abandon(tenant)
            return
        if fault is Fault.PROVIDER:
            self._shared.failure()
            own = self._tenants.get(tenant or "")
            if own is not None:
                own.abandon()
            return
        name = tenant or ""
        self._tenant(tenant).failure()
        self._run[name] = self._run.get(name, 0) + 1
        counted = sum(min(n, self._per_tenant_cap) for n in self._run.values())
        if len(self._run) >= 2 and counted >= self._failures:
            self._shared.trip()
        else:
            self._shared.abandon()

    def _tenant(self, tenant: str | None) -> Breaker:
        name = tenant or ""
        own = self._tenants.get(name)
        if own is None:
            if len(self._tenants) >= MAX_TENANT_BREAKERS:  # bounded: forget the idle ones
                self._tenants = {k: b for k, b in self._tenants.items() if not b.idle}
            own = self._tenants[name] = Breaker(
                failures=self._failures, cooldown_s=self._cooldown, clock=self._clock
            )
        return own


def backoff_delay(attempt: int, base_s: float, cap_s: float = 5.0) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, full jitter in its top half."""
    top = min(cap_s, base_s * 2.0 ** (attempt - 1))
    return top / 2 + random.random() * top / 2


MAX_COOL_S = 300.0  # a Retry-After past this is believed only this far


def cooling_s(exc: ProviderError) -> float:
    """How long the provider asked us to stay away from this target (0: it did not say)."""
    if not isinstance(exc, ProviderBackPressureError) or exc.retry_after is None:
        return 0.0
    return min(float(exc.retry_after), MAX_COOL_S)


class TargetHealth(Protocol):
    """What dispatch (and a router) ask of a target's breakers and cooling."""

    async def wait_s(self, tenant: str | None, model: str) -> float:
        """Seconds until a request may go (0: now). Reads only: claims no trial."""
        ...

    async def claim(self, tenant: str | None) -> bool:
        """For the attempt that goes: may it? Claims a due half-open trial."""
        ...

    async def succeeded(self, tenant: str | None) -> None: ...

    async def failed(self, tenant: str | None, model: str, exc: ProviderError) -> None: ...

    async def abandon(self, tenant: str | None) -> None:
        """An attempt ended without a verdict (cancelled): free a trial it held."""
        ...


class LocalHealth:
    """``TargetHealth`` of one process: its ``CircuitBreaker`` and nothing else."""

    def __init__(self, breakers: CircuitBreaker) -> None:
        self.breakers = breakers

    async def wait_s(self, tenant: str | None, model: str) -> float:
        return self.breakers.wait_s(tenant, model)

    async def claim(self, tenant: str | None) -> bool:
        return self.breakers.allow(tenant)

    async def succeeded(self, tenant: str | None) -> None:
        self.breakers.success(tenant)

    async def failed(self, tenant: str | None, model: str, exc: ProviderError) -> None:
        if seconds := cooling_s(exc):
            self.breakers.cool(model, seconds)
        self.breakers.failure(tenant, classify(exc))

    async def abandon(self, tenant: str | None) -> None:
        self.breakers.abandon(tenant)
