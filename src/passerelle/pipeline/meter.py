"""Metering: one ledger record per call, durable before the client's last byte.

The stage observes the answer like any other stage (``StreamTally``: a stream's events, characters
of content and its usage event, as they pass on the answer path) and registers its work with
``call.defer``; it runs when the answer is complete, whether it ended well, with an error, cut by
the upstream or abandoned by the client. Usage the provider did
not report (a stream that died) is estimated from what was seen, erring high, and marked
``usage_reported = false``: never a row with tokens and no cost. A target without a known price is
recorded as unpriced (cost NULL), never as $0.

Every upstream attempt is a row, keyed (request, attempt): the attempts that failed and were
retried or failed over are rows of status ``attempt_failed`` with their error code (no usage
reported: cost 0 unless the upstream said otherwise), and the last attempt is the call's own row.
Reports count calls, not attempt rows. Once the rows are committed the journal is told, so a
crash after this point is not taken for a call with no row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from decimal import Decimal

from passerelle.errors import APIError, ServiceUnavailableError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import AnswerObserver, Call, FailedAttempt
from passerelle.pipeline.resolve import Pricer
from passerelle.pricing.cost import cost_usd
from passerelle.pricing.estimate import estimate_prompt_tokens
from passerelle.providers.base import StreamChunk, Usage
from passerelle.store.base import Ledger
from passerelle.store.journal import Journal
from passerelle.store.records import Status, UsageRecord


def observed_usage(call: Call) -> Usage:
    """The usage to bill: as reported, else estimated from the request and what streamed."""
    if call.usage is not None:
        return call.usage
    if call.chunks == 0 and call.status == Status.ERROR:
        return Usage(reported=True)
    return Usage(
        input_tokens=estimate_prompt_tokens(call.body),
        output_tokens=max(call.chunks, math.ceil(call.content_chars / 3)),
        reported=False,
    )


class StreamTally(AnswerObserver):
    """What the meter reads of a stream as it passes: the events, the characters of generated
    text (to estimate usage if the stream dies) and the usage event. A completion's usage is the
    one its provider reported, set by dispatch."""

    def event(self, call: Call, chunk: StreamChunk) -> None:
        call.chunks += 1
        call.content_chars += chunk.content_chars
        if chunk.usage is not None:
            call.usage = chunk.usage


class Meter:
    def __init__(self, ledger: Ledger, pricer: Pricer, journal: Journal | None = None) -> None:
        self._ledger = ledger
        self._pricer = pricer
        self._journal = journal
        self._tally = StreamTally()

    async def __call__(self, call: Call, next: Next) -> None:
        if not self._ledger.healthy:
            # never serve what cannot be recorded
            raise ServiceUnavailableError(
                "the ledger is unreachable; requests are refused until it is back",
                code="ledger_unavailable",
            )
        call.observe(self._tally)
        call.defer(self._record)
        try:
            await next(call)
        except APIError as exc:
            call.fail(exc)
            raise

    def price_call(self, call: Call, usage: Usage) -> tuple[Decimal | None, str | None]:
        target = call.target
        if target is None:
            return Decimal(0), None
        price = self._pricer.price(target, call.received_at)
        if price is None:
            if usage.input_tokens == 0 and usage.output_tokens == 0:
                return Decimal(0), None
            return None, None
        return cost_usd(
            price,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ), price.version

    def route_saving(self, call: Call, usage: Usage, cost: Decimal | None) -> Decimal | None:
        """What serving the same usage from the route's default model would have cost, less
        what the call cost (a cascade's unserved answers included); None when either is not
        priced."""
        routed = call.routed
        if routed is None or routed.baseline is None or call.cost_usd is None or cost is None:
            return None
        price = self._pricer.price(routed.baseline, call.received_at)
        if price is None:
            return None
        baseline = cost_usd(
            price,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        )
        return baseline - call.cost_usd

    async def _record(self, call: Call) -> None:
        last = call.failed_attempts[-1] if call.failed_attempts else None
        if last is not None and last.n == call.attempts and call.usage is None:
            call.usage = last.usage  # the call ended on an attempt that was billed all the same
        usage = observed_usage(call)
        call.usage = usage
        cost, version = self.price_call(call, usage)
        # earlier attempts billed all the same (a cascade's set-aside answers, a fan-out's calls
        # before it failed) have rows of their own; the call's cost counts them
        set_aside = [
            a.cost_usd for a in call.failed_attempts if a.usage is not None and a.n < call.attempts
        ]
        # the call's cost counts the answers a cascade paid for and did not serve
        call.cost_usd = (
            cost + sum((c for c in set_aside if c is not None), Decimal(0))
            if cost is not None and set_aside
            else cost
        )
        target = call.target
        routed = call.routed
        record = UsageRecord(
            request_id=call.request_id,
            attempt=call.attempts,
            ts=call.received_at,
            tenant=call.tenant,
            key_id=call.key.key_id if call.key else None,
            feature=call.feature,
            end_user=call.user,
            endpoint=call.endpoint,
            model=call.model,
            provider=target.provider.name if target else None,
            upstream_model=target.upstream_model if target else None,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            usage_reported=usage.reported,
            cost_usd=cost,
            price_version=version,
            latency_ms=round(call.elapsed_ms(), 3),
            ttft_ms=None if call.ttft_ms() is None else round(call.ttft_ms() or 0.0, 3),
            status=call.status,
            error_code=call.error.code if call.error else None,
            stream=call.stream,
            decision=call.annotations.get("decision"),
            saved_usd=call.saved_usd,
            saving_source=call.saving_source,
            cache=call.cache,
            routed_to=routed.model if routed else None,
            route_reason=routed.reason if routed else None,
            route_saved_usd=self.route_saving(call, usage, cost) if routed else None,
        )
        attempts = [attempt_record(record, a) for a in call.failed_attempts if a.n < record.attempt]
        if attempts:
            await asyncio.gather(*(self._ledger.record(r) for r in [*attempts, record]))
        else:
            await self._ledger.record(record)
        if self._journal is not None:
            self._journal.recorded(call.request_id)


def attempt_record(call_row: UsageRecord, attempt: FailedAttempt) -> UsageRecord:
    """The row of a failed attempt: the call's who and what, the attempt's target and outcome
    (with the usage and cost of an answer that came but was not served)."""
    used = attempt.usage
    return dataclasses.replace(
        call_row,
        attempt=attempt.n,
        provider=attempt.provider,
        upstream_model=attempt.upstream_model,
        input_tokens=used.input_tokens if used else 0,
        output_tokens=used.output_tokens if used else 0,
        cached_tokens=used.cached_tokens if used else 0,
        usage_reported=used.reported if used else False,
        cost_usd=attempt.cost_usd if used else Decimal(0),
        price_version=None,
        latency_ms=attempt.latency_ms,
        ttft_ms=None,
        status=Status.ATTEMPT_FAILED,
        error_code=attempt.error_code,
        decision=None,
        saved_usd=Decimal(0),  # what the call saved is on its own row
        saving_source=None,
        cache=None,
        route_saved_usd=None,
    )
