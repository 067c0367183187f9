"""Retries with backoff, and a circuit breaker per provider.

A breaker opens after ``failures`` consecutive failed attempts and keeps traffic away from the
provider for ``cooldown_s``; then one trial request is let through (half-open): success closes
it, failure opens it again. The clock is injected so tests never sleep on it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self, *, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._open_until = 0.0
        self._trial_in_flight = False

    @property
    def is_open(self) -> bool:
        return self._consecutive >= self._threshold and (
            self._clock() < self._open_until or self._trial_in_flight
        )

    def allow(self) -> bool:
        """May a request go to this provider now? Claims the half-open trial when it is due."""
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
        """An attempt ended without a verdict (cancelled, or our own bug): free the trial."""
        self._trial_in_flight = False

    def failure(self) -> None:
        self._consecutive += 1
        self._trial_in_flight = False
        if self._consecutive >= self._threshold:
            self._open_until = self._clock() + self._cooldown


def backoff_delay(attempt: int, base_s: float, cap_s: float = 5.0) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, full jitter in its top half."""
    top = min(cap_s, base_s * 2.0 ** (attempt - 1))
    return top / 2 + random.random() * top / 2
