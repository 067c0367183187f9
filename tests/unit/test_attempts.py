"""Every outbound attempt starts and ends in one observed place, a stream's when it was read out.

A recording observer (``tests/fakes/target_stages.py``) registered with dispatch, in front of
scripted providers: a plain attempt, a streamed one (still open when dispatch returns, ended once
its last event was read, its first byte before its end), a retried one (two attempts, the failed
one also a ledger row through ``FailedAttemptRows``), and cancelled ones (a plain attempt whose
task is cancelled, a stream closed before its end).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.attempts import FailedAttemptRows
from passerelle.pipeline.chain import build_chain
from passerelle.pipeline.context import Call, FailedAttempt
from passerelle.pipeline.dispatch import Dispatch
from passerelle.pipeline.resolve import Pricer
from passerelle.pipeline.targets import Route, Target
from passerelle.pricing.catalogue import Catalogue
from passerelle.providers.base import Provider
from tests.fakes.answer_stages import MODEL, SPLIT, ScriptedProvider, scripted_target
from tests.fakes.target_stages import Flaky, Recording, Stuck

pytestmark = pytest.mark.asyncio(loop_scope="function")
BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'


def call_to(provider: Provider, *, stream: bool = False, retries: int = 0) -> Call:
    call = Call(endpoint="chat.completions", headers={}, raw_body=BODY, model=MODEL, stream=stream)
    target: Target = dataclasses.replace(scripted_target(provider), max_retries=retries)
    call.resolved(Route(MODEL, (target,)))
    return call


async def dispatch(call: Call, *observers: Recording | FailedAttemptRows) -> None:
    await build_chain([Dispatch(observers)])(call)


async def test_a_plain_attempt_is_started_and_ended_once() -> None:
    seen = Recording()
    call = call_to(ScriptedProvider(SPLIT))
    await dispatch(call, seen)
    assert [a.n for a in seen.starts] == [1] and seen.starts[0].outcome is None
    (ended,) = seen.ends
    assert (ended.provider, ended.upstream_model, ended.n, ended.outcome) == (
        "scripted",
        MODEL,
        1,
        "ok",
    )
    assert ended.request_bytes == len(BODY) and not ended.stream
    assert ended.ttfb_ms is not None and ended.latency_ms is not None
    assert ended.ttfb_ms <= ended.latency_ms


async def test_a_streamed_attempt_ends_when_its_last_event_has_been_read() -> None:
    gate = asyncio.Event()
    seen = Recording()
    call = call_to(ScriptedProvider(SPLIT, gate=gate), stream=True)
    await dispatch(call, seen)
    assert len(seen.starts) == 1 and seen.ends == []  # dispatch returned; the stream goes on
    answer = deliver(call)
    assert isinstance(answer, AnswerStream)
    events = aiter(answer)
    await anext(events)
    seen.read = 1
    await asyncio.sleep(0.005)  # the provider waits after its first event
    gate.set()
    async for _ in events:
        assert seen.ends == []
        seen.read += 1
    (ended,) = seen.ends
    assert ended.outcome == "ok" and ended.stream
    assert seen.read_at_end == [seen.read]  # after the last event, before the stream is closed
    assert ended.ttfb_ms is not None and ended.latency_ms is not None
    assert ended.ttfb_ms < ended.latency_ms
    await answer.aclose()
    assert len(seen.ends) == 1  # closing after the end ends nothing twice


async def test_a_retried_call_is_two_attempts_and_the_failed_one_a_ledger_row() -> None:
    seen = Recording()
    call = call_to(Flaky(SPLIT, failures=1), retries=1)
    await dispatch(call, FailedAttemptRows(Pricer(Catalogue([]))), seen)
    assert [(a.n, a.outcome) for a in seen.ends] == [(1, "upstream_http_503"), (2, "ok")]
    assert [a.n for a in seen.starts] == [1, 2]
    latency = seen.ends[0].latency_ms
    assert latency is not None
    assert call.failed_attempts == [
        FailedAttempt(1, "scripted", MODEL, "upstream_http_503", latency)
    ]


async def test_a_retried_stream_is_two_attempts() -> None:
    seen = Recording()
    call = call_to(Flaky(SPLIT, failures=1), stream=True, retries=1)
    await dispatch(call, seen)
    answer = deliver(call)
    assert isinstance(answer, AnswerStream)
    [_ async for _ in answer]
    await answer.aclose()
    assert [(a.n, a.outcome) for a in seen.ends] == [(1, "upstream_http_503"), (2, "ok")]


async def test_a_cancelled_plain_attempt_ends_cancelled() -> None:
    seen = Recording()
    call = call_to(Stuck(SPLIT))
    task = asyncio.create_task(dispatch(call, seen))
    while not seen.starts:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(a.n, a.outcome) for a in seen.ends] == [(1, "cancelled")]


async def test_a_stream_closed_before_its_end_ends_cancelled() -> None:
    seen = Recording()
    call = call_to(ScriptedProvider(SPLIT, tail=5), stream=True)
    await dispatch(call, seen)
    answer = deliver(call)
    assert isinstance(answer, AnswerStream)
    events = aiter(answer)
    await anext(events)
    assert seen.ends == []
    await answer.aclose()
    assert [(a.n, a.outcome) for a in seen.ends] == [(1, "cancelled")]
