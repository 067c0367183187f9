"""Answer-path test pieces: a scripted provider and stages that rewrite answers.

``ScriptedProvider`` answers with the content and stream events a test gives it (each marked as
arrived with the next one or not), usage 10 in, 5 out. ``Transforming`` is a test stage, one line
in a chain, that registers a fresh transformer per call: ``Restore`` upper-cases content and
holds a ``[[value]]`` split across events until it is whole; ``Explode`` fails (a bug) and
``Refuse`` refuses (an error of the hierarchy), on the plain body and on a stream's third event.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Callable

import orjson

from passerelle.errors import PermissionDeniedError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import AnswerTransformer, Call
from passerelle.pipeline.targets import Target
from passerelle.providers.base import (
    Capabilities,
    Completion,
    Embeddings,
    Provider,
    StreamChunk,
    UpstreamRequest,
    Usage,
)
from passerelle.providers.resilience import CircuitBreaker, LocalHealth

MODEL = "gpt-4o-mini"
# the provider's stream: (content, more: arrived with the next one); "[[jean dupont]]" is split
# across two events, and the last two arrive together
SPLIT = [("Bonjour ", False), ("[[jean", False), (" dupont]] à", True), (" bientôt.", False)]
CLIENT_SEES = ["BONJOUR ", "[[JEAN DUPONT]] À", " BIENTÔT."]


def delta_event(content: str | None, *, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": [choice]})


class ScriptedProvider(Provider):
    """Answers with the content and the stream events a test gives it; usage 10 in, 5 out."""

    name = "scripted"
    kind = "openai"
    capabilities = Capabilities()

    def __init__(
        self, events: list[tuple[str, bool]], gate: asyncio.Event | None = None, tail: int = 0
    ) -> None:
        self.events = events
        self.gate = gate  # a stream waits for it after its first event...
        self.tail = tail  # ...and has this many more events before its end

    async def complete(self, request: UpstreamRequest) -> Completion:
        text = "".join(content for content, _ in self.events)
        message = {"role": "assistant", "content": text}
        body = {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        return Completion(body=orjson.dumps(body), usage=Usage(10, 5), upstream_model=MODEL)

    async def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        for i, (content, more) in enumerate(self.events):
            yield StreamChunk(delta_event(content), content_chars=len(content), more=more)
            if i == 0 and self.gate is not None:
                await self.gate.wait()
        for _ in range(self.tail):
            yield StreamChunk(delta_event(" encore"), content_chars=7)
        yield StreamChunk(delta_event(None, finish="stop"))
        usage = orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": []})
        yield StreamChunk(usage, usage=Usage(10, 5), forward=request.include_usage)

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        return None


class Restore(AnswerTransformer):
    """Upper-cases content; a ``[[...]]`` value split across events is held until it is whole."""

    def __init__(self) -> None:
        self.held = ""

    def body(self, call: Call, body: bytes) -> bytes:
        doc = orjson.loads(body)
        for choice in doc["choices"]:
            choice["message"]["content"] = choice["message"]["content"].upper()
        return orjson.dumps(doc)

    def event(self, call: Call, chunk: StreamChunk) -> list[StreamChunk]:
        doc = orjson.loads(chunk.data)
        delta = doc["choices"][0]["delta"] if doc["choices"] else {}
        if "content" not in delta:
            return [chunk]
        text = self.held + delta["content"]
        opened = text.rfind("[[")
        cut = opened if opened >= 0 and "]]" not in text[opened:] else len(text)
        self.held = text[cut:]
        if cut == 0:  # the whole event is a partial value: held back
            return []
        delta["content"] = text[:cut].upper()
        return [dataclasses.replace(chunk, data=orjson.dumps(doc), content_chars=cut)]

    def flush(self, call: Call) -> list[StreamChunk]:
        held, self.held = self.held, ""
        return [StreamChunk(delta_event(held.upper()), content_chars=len(held))] if held else []


class Explode(AnswerTransformer):
    """Fails on the plain body, and on the stream's third event: a bug (``RuntimeError``)."""

    def __init__(self) -> None:
        self.seen = 0

    def failure(self) -> Exception:
        return RuntimeError("the transformer broke")

    def body(self, call: Call, body: bytes) -> bytes:
        raise self.failure()

    def event(self, call: Call, chunk: StreamChunk) -> list[StreamChunk]:
        self.seen += 1
        if self.seen == 3:
            raise self.failure()
        return [chunk]


class Refuse(Explode):
    """Refuses the answer on purpose, with an error of the hierarchy."""

    def failure(self) -> Exception:
        return PermissionDeniedError("the answer holds a forbidden value", code="answer_refused")


class Transforming:
    """The test stage: registers a fresh transformer for each call, then passes it on."""

    def __init__(self, make: Callable[[], AnswerTransformer]) -> None:
        self._make = make

    async def __call__(self, call: Call, next: Next) -> None:
        call.transform(self._make())
        await next(call)


def scripted_target(provider: Provider) -> Target:
    breaker = LocalHealth(CircuitBreaker(failures=5, cooldown_s=30.0))
    return Target(provider, MODEL, None, breaker, max_retries=0, retry_backoff_s=0.0)


def contents(payloads: list[bytes]) -> list[str]:
    found = []
    for p in payloads:
        choices = orjson.loads(p).get("choices") or [{}]
        if "content" in choices[0].get("delta", {}):
            found.append(choices[0]["delta"]["content"])
    return found
