"""The answer path, pure: stages registered in chain order, the answer innermost first.

A chain of test stages and dispatch in front of a scripted provider (``tests/fakes/
answer_stages.py``): an observer nearest dispatch sees the provider's events, the outermost one
what the client gets; what arrived together leaves together through a transformer that holds a
split value back; a value still held at the end is flushed; closing the answer closes the
provider's stream. The same stages through a real gateway: tests/integration/test_answer_path.py.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.chain import Next, Stage, build_chain
from passerelle.pipeline.context import AnswerObserver, Call, ChunkStream
from passerelle.pipeline.dispatch import Dispatch
from passerelle.pipeline.targets import Route
from passerelle.providers.base import StreamChunk
from tests.fakes.answer_stages import (
    CLIENT_SEES,
    MODEL,
    SPLIT,
    Restore,
    ScriptedProvider,
    Transforming,
    contents,
    delta_event,
    scripted_target,
)

pytestmark = pytest.mark.asyncio(loop_scope="function")


class Seen(AnswerObserver):
    def __init__(self, into: list[str]) -> None:
        self.into = into

    def event(self, call: Call, chunk: StreamChunk) -> None:
        self.into.extend(contents([chunk.data]) if chunk.forward else [])


async def stream_call(events: list[tuple[str, bool]], *stages: Stage) -> AnswerStream:
    """A call through a chain of the given stages and dispatch, its answer not yet read."""
    call = Call(endpoint="chat.completions", headers={}, raw_body=b"", stream=True)
    call.resolved(Route(model=MODEL, targets=(scripted_target(ScriptedProvider(events)),)))
    await build_chain([*stages, Dispatch()])(call)
    answer = deliver(call)
    assert isinstance(answer, AnswerStream)
    return answer


def observing(into: list[str]) -> Stage:
    class Observing:
        async def __call__(self, call: Call, next: Next) -> None:
            call.observe(Seen(into))
            await next(call)

    return Observing()


async def test_the_answer_flows_innermost_first_and_batches_survive_a_transformer() -> None:
    outer: list[str] = []
    inner: list[str] = []
    answer = await stream_call(SPLIT, observing(outer), Transforming(Restore), observing(inner))
    out = [chunk async for chunk in answer]
    await answer.aclose()
    assert inner == [content for content, _ in SPLIT]  # nearest dispatch: the provider's words
    assert outer == CLIENT_SEES  # the outermost stage: what the client gets
    batches: list[list[str]] = [[]]
    for chunk in out:
        if chunk.forward:
            batches[-1] += contents([chunk.data])
        if not chunk.more:
            batches.append([])
    # "[[jean" was held (its arrival still ends a batch, empty), and the two events that arrived
    # together leave together, rewritten
    assert batches[:3] == [["BONJOUR "], [], ["[[JEAN DUPONT]] À", " BIENTÔT."]]


async def test_a_held_value_is_flushed_when_the_stream_ends() -> None:
    seen: list[str] = []
    answer = await stream_call(
        [("au revoir [[marie", False)], observing(seen), Transforming(Restore)
    )
    _ = [chunk async for chunk in answer]
    await answer.aclose()
    assert seen == ["AU REVOIR ", "[[MARIE"]


async def test_closing_the_answer_closes_the_providers_stream_under_a_transformer() -> None:
    closed: list[str] = []

    async def upstream() -> AsyncGenerator[StreamChunk, None]:
        try:
            for i in range(10):
                yield StreamChunk(delta_event(f"w{i} "))
        finally:
            closed.append("upstream")

    call = Call(endpoint="chat.completions", headers={}, raw_body=b"", stream=True)
    call.transform(Restore())
    call.result = ChunkStream(first=StreamChunk(delta_event("w ")), rest=upstream())
    answer = deliver(call)
    assert isinstance(answer, AnswerStream)
    seen = 0
    async for _chunk in answer:
        seen += 1
        if seen == 2:  # the provider's generator is running: it holds its connection
            break
    await answer.aclose()
    assert closed == ["upstream"]
