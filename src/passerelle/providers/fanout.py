"""Several choices from a provider that gives one per call: ``n`` calls, one answer.

OpenAI's ``n`` asks for several answers to the same prompt. Anthropic's Messages API, the
embedded engine and some OpenAI-compatible servers give one per call (their capabilities say
``n=False``), and answering one where the client asked for three would drop a feature without a
word. So the gateway makes the calls itself: ``n`` requests with ``n: 1``, at most
``MAX_PARALLEL`` at a time, merged into one answer in which choice ``j`` comes from call ``j``.
Their usage is summed, prompt tokens included, since each call is billed for its prompt: the
ledger row of the call carries what all of them cost. A legacy completion's batch of prompts
keeps OpenAI's order (prompt ``k``'s answers are choices ``k*n`` to ``k*n + n - 1``).

A stream plays the calls one after the other (a client reads choices by their index, so the
order of the events does not matter to it), each one's events re-indexed, and the usage is
reported once, at the end, for all of them. Every call gets the same request; a client that
sends a ``seed`` gets ``n`` identical answers, as it would from a single call with that seed on
most engines.

If one call fails, no further call starts and those in flight are waited for rather than
cancelled: the provider bills them either way, and their usage goes to the failed attempt's
ledger row (``spent``, ``Attempt.billed``), so a fan-out that fails is never free.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from passerelle.providers.base import Completion, Provider, StreamChunk, UpstreamRequest, Usage

MAX_PARALLEL = 4  # calls in flight at once for one request: a local engine queues the rest


def fans_out(provider: Provider, request: UpstreamRequest) -> int:
    """How many calls the request needs on this provider: its ``n`` when the provider gives
    one choice per call, else 1."""
    n = request.body.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        return 1
    return 1 if provider.capabilities.n else n


def _single(request: UpstreamRequest) -> UpstreamRequest:
    return dataclasses.replace(request, body={**request.body, "n": 1})


def _add(total: Usage, part: Usage) -> None:
    total.input_tokens += part.input_tokens
    total.output_tokens += part.output_tokens
    total.cached_tokens += part.cached_tokens
    total.cache_write_tokens += part.cache_write_tokens
    total.reported = total.reported and part.reported


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _index(choice: dict[str, Any], call: int, n: int) -> dict[str, Any]:
    k = choice.get("index")
    k = k if isinstance(k, int) and not isinstance(k, bool) else 0
    return {**choice, "index": k * n + call}


def merge(answers: list[Completion]) -> Completion:
    """The answers of ``n`` calls as one: the first's envelope, every call's choices."""
    n = len(answers)
    docs = [orjson.loads(a.body) for a in answers]
    usage = Usage()
    for answer in answers:
        _add(usage, answer.usage)
    choices = [_index(c, j, n) for j, doc in enumerate(docs) for c in doc.get("choices") or () if c]
    choices.sort(key=lambda c: c["index"])
    merged = {**docs[0], "choices": choices, "usage": usage_json(usage)}
    return Completion(orjson.dumps(merged), usage, answers[0].upstream_model)


class _NotStarted(Exception):
    """A call not started because another had failed."""


async def complete(
    provider: Provider, request: UpstreamRequest, n: int, spent: Usage | None = None
) -> Completion:
    """``n`` calls, ``MAX_PARALLEL`` at a time. After a failure no call starts, but those in
    flight are waited for, since the provider bills them: their usage is added to ``spent`` and
    the first failure raised."""
    gate = asyncio.Semaphore(MAX_PARALLEL)
    one = _single(request)
    failed = False

    async def call() -> Completion:
        nonlocal failed
        async with gate:
            if failed:
                raise _NotStarted
            try:
                return await provider.complete(one)
            except BaseException:
                failed = True
                raise

    tasks = [asyncio.ensure_future(call()) for _ in range(n)]
    try:
        results = await asyncio.gather(*tasks, return_exceptions=True)
    except BaseException:  # the call itself was cancelled: so are its calls
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    answers = [r for r in results if isinstance(r, Completion)]
    errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, _NotStarted)]
    if errors:
        if spent is not None:
            for answer in answers:
                _add(spent, answer.usage)
        raise errors[0]
    return merge(answers)


def _payload(data: bytes) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


async def stream(
    provider: Provider, request: UpstreamRequest, n: int
) -> AsyncGenerator[StreamChunk, None]:
    """The ``n`` calls' streams one after the other, each event's choices moved to their place
    and its usage taken out; then one usage event for all of them."""
    one = _single(request)
    total = Usage()
    envelope: dict[str, Any] = {}  # the first call's id and time, kept on every event
    for call in range(n):
        async with contextlib.aclosing(provider.stream(one)) as events:
            async for chunk in events:
                if chunk.usage is not None:
                    _add(total, chunk.usage)
                payload = _payload(chunk.data)
                if payload is None:  # not JSON: passed on as the provider gave it
                    yield chunk
                    continue
                envelope = envelope or {
                    k: payload[k] for k in ("id", "object", "created", "model") if k in payload
                }
                choices = [_index(c, call, n) for c in payload.get("choices") or () if c]
                if not choices:  # the call's own usage event: counted above, reported below
                    continue
                payload.pop("usage", None)
                payload.update(envelope, choices=choices)
                yield dataclasses.replace(chunk, data=orjson.dumps(payload), usage=None)
    usage_event = {**envelope, "choices": [], "usage": usage_json(total)}
    yield StreamChunk(data=orjson.dumps(usage_event), usage=total, forward=request.include_usage)
