"""Dispatch: the only stage that talks to providers.

The call's eligible targets (``call.targets``: its route's, less what resolution and later
stages filtered out) are tried in order, and no other. What a failure is decides what follows
(``errors.py``, ``ProviderError``'s kinds): a kind that is ``retryable`` (429, 5xx, connection
errors, timeouts) gets the target's retries with exponential backoff, unless its circuit breaker
is open for the calling tenant or the target is cooling after a rate limit's ``Retry-After`` (see
providers/resilience.py for what counts towards which breaker); then the next target takes over,
at once. When no target could be tried the client gets 503 ``providers_unavailable`` with the
earliest ``Retry-After``. A rejection of the request itself (400, 413, 422) is the client's to fix:
no retry, no fallback, and it reaches the client with the upstream's status, type, code and param. A stream counts as
answered once its first chunk arrives; after that nothing is retried, since bytes may already be
on their way to the client. Every attempt is started and ended here, with the observers the
gateway registered (``pipeline/attempts.py``); a stream's ends when the answer path has read its
last event. One observer notes each failed attempt on the call, and the meter records it as a
ledger row of its own (the upstream may bill a timed-out attempt). A call in a dialect that the
target's provider speaks itself (``Capabilities.native``) is passed through in that dialect.
A request for ``n`` choices to a provider that gives one per call is made as ``n`` calls
(``providers/fanout.py``), all within the one attempt.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from functools import partial

from passerelle.errors import ProviderError, ProviderFailedError, ServiceUnavailableError
from passerelle.pipeline.attempts import (
    CANCELLED,
    OK,
    Attempt,
    AttemptObserver,
    Attempts,
    failure_code,
)
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call, ChunkStream
from passerelle.pipeline.targets import NoEligibleTargetError, Target
from passerelle.providers import fanout
from passerelle.providers.base import UpstreamRequest, Usage
from passerelle.providers.resilience import TRIAL_WAIT_S, backoff_delay


def upstream_request(call: Call, target: Target) -> UpstreamRequest:
    """What the provider is asked. ``call.max_tokens`` is the output limit in force: the client's,
    or for a call under a budget or rate limit the one the budget stage reserved and set. A
    provider that speaks the call's dialect itself gets the client's own body (its model set to
    the target's); any other gets the canonical chat body."""
    native = call.native_body
    speaks = native is not None and call.endpoint in target.provider.capabilities.native
    return UpstreamRequest(
        body=call.body,
        upstream_model=target.upstream_model,
        stream=call.stream,
        include_usage=call.include_usage,
        max_output_tokens=call.max_tokens if call.endpoint != "embeddings" else None,
        endpoint="completions" if call.endpoint == "completions" else "chat.completions",
        api=call.endpoint if speaks else "chat.completions",
        native_body={**native, "model": target.upstream_model} if speaks and native else None,
        native_headers=forwarded(call) if speaks else None,
    )


def forwarded(call: Call) -> dict[str, str] | None:
    """The client's headers its dialect carries meaning in, for a provider that speaks it."""
    headers = call.headers
    found = {h: headers[h] for h in call.dialect.native_headers if h in headers}
    return found or None


class Dispatch:
    """``observers`` see every attempt start and end (``pipeline/attempts.py``)."""

    def __init__(self, observers: Sequence[AttemptObserver] = ()) -> None:
        self._attempts = Attempts(observers)

    async def __call__(self, call: Call, next: Next) -> None:
        last: ProviderError | None = None
        waits: list[float] = []
        if not call.targets:  # resolution refuses an empty list; a stage must not leave one
            assert call.route is not None
            raise NoEligibleTargetError(call.eligible.explain(call.route.model))
        for target in call.targets:
            wait = await target.breaker.wait_s(call.tenant, target.upstream_model)
            if wait > 0 or not await target.breaker.claim(call.tenant):
                waits.append(wait or TRIAL_WAIT_S)  # open, cooling, or its trial is taken
                continue
            failure = await self._try_target(call, target)
            if failure is None:
                await next(call)
                return
            last = failure
        if last is not None:
            raise last.to_api_error() from last
        raise ServiceUnavailableError(
            f"no provider available for model '{call.model}': every target is open or cooling "
            "down; try again later",
            code="providers_unavailable",
            headers={"retry-after": str(max(1, math.ceil(min(waits, default=TRIAL_WAIT_S))))},
        )

    async def _try_target(self, call: Call, target: Target) -> ProviderError | None:
        """Attempts on one target, with its retries. None when it answered; else the last
        failure. The first attempt's claim on the breaker was made by the caller."""
        health = target.breaker
        last: ProviderError | None = None
        for retry in range(target.max_retries + 1):
            if retry:
                await asyncio.sleep(backoff_delay(retry, target.retry_backoff_s))
                # never before its Retry-After, never through an open breaker: fall back instead
                if await health.wait_s(call.tenant, target.upstream_model) > 0:
                    return last
                if not await health.claim(call.tenant):
                    return last
            attempt = self._attempts.start(call, target)
            try:
                await self._attempt(call, target, attempt)
            except ProviderError as exc:
                last = exc
                self._attempts.end(call, attempt, failure_code(exc), exc)
                await health.failed(call.tenant, target.upstream_model, exc)
                if not exc.falls_back:  # the client's to fix: no retry, no fallback
                    raise exc.to_api_error() from exc
                if not exc.retryable:
                    return exc
                continue
            except BaseException:
                self._attempts.end(call, attempt, CANCELLED)
                await health.abandon(call.tenant)  # cancelled mid-attempt: no verdict on it
                raise
            await health.succeeded(call.tenant)
            return None
        return last

    async def _attempt(self, call: Call, target: Target, attempt: Attempt) -> None:
        request = upstream_request(call, target)
        call.native = request.native_body is not None  # the answer comes in the call's dialect
        provider = target.provider
        attempts = self._attempts
        if call.endpoint == "embeddings":
            result = await provider.embed(request)
            attempts.first_byte(attempt, time.perf_counter())
            call.usage = result.usage
            call.result = result
        elif call.stream:
            calls = fanout.fans_out(provider, request)
            gen = fanout.stream(provider, request, calls) if calls > 1 else provider.stream(request)
            try:
                first = await anext(gen)
            except StopAsyncIteration:
                raise ProviderFailedError(
                    "stream ended before any event", provider=provider.name
                ) from None
            call.first_token_at = time.perf_counter()
            attempts.first_byte(attempt, call.first_token_at)
            # the attempt ends when the stream does, as the answer path reads it
            call.result = ChunkStream(
                first=first,
                rest=gen,
                drain_on_disconnect=provider.capabilities.drain_on_disconnect,
                on_end=partial(self._stream_ended, call, attempt),
            )
            return
        else:
            calls = fanout.fans_out(provider, request)
            if calls > 1:
                spent = Usage()
                try:
                    completion = await fanout.complete(provider, request, calls, spent)
                except ProviderError:
                    attempt.billed = spent if spent.input_tokens or spent.output_tokens else None
                    raise
            else:
                completion = await provider.complete(request)
            call.first_token_at = time.perf_counter()
            attempts.first_byte(attempt, call.first_token_at)
            call.usage = completion.usage
            call.result = completion
        attempts.end(call, attempt, OK)

    def _stream_ended(self, call: Call, attempt: Attempt, outcome: str | ProviderError) -> None:
        if isinstance(outcome, ProviderError):  # the stream broke after its first event
            code = failure_code(outcome)
            cut = code == "upstream_unreachable"
            self._attempts.end(call, attempt, "upstream_cut" if cut else code, outcome)
        else:
            self._attempts.end(call, attempt, outcome)
