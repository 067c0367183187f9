"""The answer path: what the provider says comes back through the chain, plain or streamed alike.

Stages register, on their way in and so in chain order, answer observers (see everything,
rewrite nothing: the meter's count, the idempotency capture) and transformers (rewrite a
completion's body or each stream event, may hold text back across events and flush it at the
end) with ``call.observe`` and ``call.transform``. The answer flows back through them innermost
first: the stage nearest dispatch sees the provider's answer first, the outermost sees what the
client gets [starlette: the body passes through every middleware's ``send``]. The server only
writes what comes out.

A stream's first event is no different from the others. Events that arrived together (the
provider marks them with ``StreamChunk.more``) leave together whatever transformers make of
them: the path, not a transformer, marks where a batch ends. With no transformer registered the
provider's events pass as they are, at the cost of one call per observer per event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable

from passerelle.errors import ProviderError
from passerelle.pipeline.context import AnswerObserver, AnswerTransformer, Call, ChunkStream
from passerelle.providers.base import StreamChunk

Step = AnswerObserver | AnswerTransformer


def deliver(call: Call) -> bytes | AnswerStream:
    """The answer as the client gets it: a plain body now (its transformers run here, and may
    raise), or a stream whose events pass through the path as they are read."""
    result = call.result
    if isinstance(result, ChunkStream):
        return AnswerStream(call, result)
    assert result is not None, "the chain ended without an answer"
    body = result.body
    for step in reversed(call.answer_path):
        if isinstance(step, AnswerTransformer):
            body = step.body(call, body)
        else:
            step.body(call, body)
    return body


class AnswerStream:
    """The stream the client gets. Closing it closes the provider's stream under it."""

    __slots__ = ("_call", "_events", "_source", "drain_on_disconnect")

    def __init__(self, call: Call, source: ChunkStream) -> None:
        self._call = call
        self._source = source
        self._events: AsyncGenerator[StreamChunk, None] | None = None
        self.drain_on_disconnect = source.drain_on_disconnect

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        call, steps = self._call, call_steps(self._call)
        if call.transforms_answer:
            self._events = _transformed(call, self._source, steps)
        else:
            self._events = _observed(
                call, self._source, [s.event for s in steps if isinstance(s, AnswerObserver)]
            )
        return self._events

    async def aclose(self) -> None:
        try:
            if self._events is not None:
                await self._events.aclose()
        finally:
            await self._source.aclose()


def call_steps(call: Call) -> list[Step]:
    """The path in the order the answer takes it: innermost stage first."""
    return call.answer_path[::-1]


async def _observed(
    call: Call, source: ChunkStream, observers: list[Callable[[Call, StreamChunk], None]]
) -> AsyncGenerator[StreamChunk, None]:
    """No transformer: each event is shown to the observers and passes unchanged."""
    first, rest = source.first, source.rest
    try:
        if len(observers) == 1:  # the common case (the meter alone): no loop per event
            (see,) = observers
            see(call, first)
            yield first
            async for chunk in rest:
                see(call, chunk)
                yield chunk
        else:
            for see in observers:
                see(call, first)
            yield first
            async for chunk in rest:
                for see in observers:
                    see(call, chunk)
                yield chunk
    except ProviderError as exc:
        source.ended(exc)
        raise
    source.ended("ok")  # the last event has been read: the attempt is over


async def _transformed(
    call: Call, source: ChunkStream, steps: list[Step]
) -> AsyncGenerator[StreamChunk, None]:
    first = source.first
    for out in _batch(_through(call, steps, [first]), first.more):
        yield out
    try:
        async for chunk in source.rest:
            for out in _batch(_through(call, steps, [chunk]), chunk.more):
                yield out
    except ProviderError as exc:
        source.ended(exc)
        raise
    source.ended("ok")
    for out in _batch(_flushed(call, steps), False):
        yield out


def _through(call: Call, steps: list[Step], chunks: list[StreamChunk]) -> list[StreamChunk]:
    for step in steps:
        if isinstance(step, AnswerTransformer):
            chunks = [out for chunk in chunks for out in step.event(call, chunk)]
        else:
            for chunk in chunks:
                step.event(call, chunk)
    return chunks


def _flushed(call: Call, steps: list[Step]) -> list[StreamChunk]:
    """The end of the stream: each transformer hands back what it held, and what an inner one
    flushed passes through the outer ones first."""
    chunks: list[StreamChunk] = []
    for step in steps:
        if isinstance(step, AnswerTransformer):
            chunks = [out for chunk in chunks for out in step.event(call, chunk)]
            chunks += step.flush(call)
        else:
            for chunk in chunks:
                step.event(call, chunk)
    return chunks


def _batch(chunks: list[StreamChunk], more: bool) -> list[StreamChunk]:
    """What one arrival became, marked as one batch: every event but the last says more is to
    come. An arrival that became nothing still ends its batch (an empty event no one sees)."""
    if not chunks:
        return [] if more else [StreamChunk(data=b"", forward=False)]
    for chunk in chunks[:-1]:
        chunk.more = True
    chunks[-1].more = more
    return chunks
