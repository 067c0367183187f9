"""Every outbound attempt, in one observed place.

Dispatch starts an ``Attempt`` before it asks a provider anything and ends it once the attempt's
outcome is known: when the answer arrived, when it failed, when it was cancelled, and for a
stream when its last event has been read (or the stream was closed before that), not when
dispatch returned. ``AttemptObserver``s registered at start-up (``Gateway.attempt_observers``)
see each start and end: the ledger's rows for failed attempts (``FailedAttemptRows``) are one;
an audit trail, metrics or traces are others. An observer must be quick and must not raise: it
runs on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from passerelle.errors import ProviderError, ProviderTimeoutError
from passerelle.pipeline.context import Call, FailedAttempt
from passerelle.pipeline.resolve import Pricer
from passerelle.pipeline.targets import Target
from passerelle.providers.base import Usage

OK = "ok"
CANCELLED = "cancelled"


@dataclass(slots=True)
class Attempt:
    """One request to a provider. ``outcome`` is None while it runs, then ``ok``, ``cancelled``
    or the failure's code (``upstream_http_503``, ``upstream_timeout``, ``upstream_unreachable``;
    ``upstream_cut`` for a stream that broke after its first event).
    Times are in milliseconds from its start; ``request_bytes`` is the client's request body."""

    n: int  # the call's attempt number, from 1, across targets
    provider: str
    upstream_model: str
    stream: bool
    request_bytes: int
    started: float  # time.perf_counter()
    outcome: str | None = None
    latency_ms: float | None = None
    ttfb_ms: float | None = None  # the first byte of the answer (a stream's first event)
    error: ProviderError | None = None
    jurisdiction: str | None = None  # the target's
    # what a failed attempt was billed all the same: the calls of a fan-out that answered
    billed: Usage | None = None


def failure_code(exc: ProviderError) -> str:
    if isinstance(exc, ProviderTimeoutError):
        return "upstream_timeout"
    if exc.status is not None:
        return f"upstream_http_{exc.status}"
    return "upstream_unreachable"


class AttemptObserver:
    """Sees every attempt start and end. The defaults see nothing."""

    def started(self, call: Call, attempt: Attempt) -> None:
        return None

    def ended(self, call: Call, attempt: Attempt) -> None:
        return None


class FailedAttemptRows(AttemptObserver):
    """A failed attempt becomes a ledger row of its own (the meter writes those that came before
    the call's last attempt), since the upstream may bill it (a timeout is not a refusal). What
    it was billed for all the same (``Attempt.billed``) is on its row, priced."""

    def __init__(self, pricer: Pricer) -> None:
        self._pricer = pricer

    def ended(self, call: Call, attempt: Attempt) -> None:
        if attempt.error is None or attempt.outcome is None:
            return
        latency = attempt.latency_ms or 0.0
        billed = attempt.billed
        cost: Decimal | None = Decimal(0)
        if billed is not None and call.target is not None:
            cost = self._pricer.cost(call.target, call.received_at, billed)
        call.failed_attempts.append(
            FailedAttempt(
                attempt.n,
                attempt.provider,
                attempt.upstream_model,
                attempt.outcome,
                latency,
                usage=billed,
                cost_usd=cost,
            )
        )


class Attempts:
    """Starts and ends attempts and shows them to the observers, in registration order."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Sequence[AttemptObserver]) -> None:
        self._observers = tuple(observers)

    def start(self, call: Call, target: Target) -> Attempt:
        call.attempts += 1
        call.target = target
        attempt = Attempt(
            n=call.attempts,
            provider=target.provider.name,
            upstream_model=target.upstream_model,
            stream=call.stream,
            request_bytes=len(call.raw_body),
            started=time.perf_counter(),
            jurisdiction=target.jurisdiction,
        )
        for observer in self._observers:
            observer.started(call, attempt)
        return attempt

    @staticmethod
    def first_byte(attempt: Attempt, at: float) -> None:
        attempt.ttfb_ms = round((at - attempt.started) * 1000.0, 3)

    def end(
        self, call: Call, attempt: Attempt, outcome: str, error: ProviderError | None = None
    ) -> None:
        """The attempt is over; a second end (a stream closed after its last event) is ignored."""
        if attempt.outcome is not None:
            return
        attempt.outcome = outcome
        attempt.error = error
        attempt.latency_ms = round((time.perf_counter() - attempt.started) * 1000.0, 3)
        for observer in self._observers:
            observer.ended(call, attempt)
