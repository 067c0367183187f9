"""A harness to drive one stage of the request path alone: no process, no socket, no store server.

``call(...)`` builds the ``Call`` a stage would receive, as if the stages before it had run (a
tenant's key, a parsed body, a route to fake targets), in one line::

    c = call({"messages": HI, "max_tokens": 50}, tenant="acme", route=route("premium"))

``FakeNext`` stands for the rest of the chain: it records what each call looked like when it
arrived (route, output limit, headers, decisions) and can play a provider's answer, plain
(``completion``) or streamed (``stream``), or fail (``raises``), the way dispatch would::

    downstream = FakeNext(completion("Hello", cost="0.002"))
    await serve(Budget(...), c, downstream)  # as the server runs it: deferred work last
    assert downstream.received[0].max_tokens == 50
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from passerelle.errors import APIError, ProviderError
from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.chain import Next, Stage
from passerelle.pipeline.context import Call, ChunkStream
from passerelle.pipeline.parse import load_json_object, parse_chat, parse_embeddings
from passerelle.pipeline.targets import Route, Target
from passerelle.pricing.catalogue import Price
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
from passerelle.tenancy import ApiKey, key_digest, key_id_for

HI = [{"role": "user", "content": "hi"}]
NOW = 1_780_000_000.0  # a fixed moment (2026-05-28 UTC): budget periods do not depend on the run
# USD per million tokens: $1 in, $2 out
PRICE = Price(input=Decimal(1), output=Decimal(2), cached_input=Decimal("0.5"), version="test")


class FakeProvider(Provider):
    """A provider no stage may reach: the harness's ``next`` plays the answers instead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = "fake"
        self.capabilities = Capabilities()

    async def complete(self, request: UpstreamRequest) -> Completion:
        raise AssertionError(f"a stage called provider {self.name} itself")

    def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        raise AssertionError(f"a stage called provider {self.name} itself")

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        raise AssertionError(f"a stage called provider {self.name} itself")

    async def aclose(self) -> None:
        return None


class Clock:
    """A hand-held clock for breakers and cooling: tests move it, nothing sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedProvider(FakeProvider):
    """A provider for dispatch, the one stage that calls providers: each request takes the next
    item of its script, a ``ProviderError`` to raise or a text to answer (the last one repeats)."""

    def __init__(self, name: str, *script: ProviderError | str) -> None:
        super().__init__(name)
        self.script = list(script) or ["Hello"]
        self.requests = 0

    async def complete(self, request: UpstreamRequest) -> Completion:
        self.requests += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, ProviderError):
            raise item
        body = {"object": "chat.completion", "model": request.upstream_model, "answer": item}
        return Completion(
            body=orjson.dumps(body), usage=Usage(), upstream_model=request.upstream_model
        )


def target(
    model: str,
    *,
    provider: str | Provider = "fake",
    price: Price | None = PRICE,
    clock: Callable[[], float] = lambda: 0.0,
    failures: int = 5,
    cooldown_s: float = 30.0,
    max_retries: int = 0,
) -> Target:
    breakers = CircuitBreaker(failures=failures, cooldown_s=cooldown_s, clock=clock)
    return Target(
        provider=FakeProvider(provider) if isinstance(provider, str) else provider,
        upstream_model=model,
        price=price,
        breaker=LocalHealth(breakers),
        max_retries=max_retries,
        retry_backoff_s=0.0,
    )


def route(model: str, *upstream: str, degrade_to: str | None = None) -> Route:
    """A route to fake targets, one per upstream model (by default one, named as the route)."""
    return Route(
        model=model,
        targets=tuple(target(m) for m in (upstream or (model,))),
        degrade_to=degrade_to,
    )


_route = route  # ``call`` has a parameter of that name


def api_key(tenant: str, secret: str | None = None) -> ApiKey:
    digest = key_digest(secret or f"sk-{tenant}")
    return ApiKey(key_id=key_id_for(digest), tenant=tenant, digest=digest)


def call(
    body: Mapping[str, Any] | None = None,
    *,
    tenant: str | None = "acme",
    route: Route | None = None,
    endpoint: str = "chat.completions",
    headers: Mapping[str, str] | None = None,
    parsed: bool = True,
    at: float = NOW,
) -> Call:
    """The call a stage receives: authenticated as ``tenant`` (None: not yet), its body parsed
    by the real parser and routed (to ``route``, else to one fake target named as the model),
    unless ``parsed=False``. The body defaults to a one-message chat (or an embeddings input)
    for ``route``'s model, else ``gpt-4o-mini``."""
    if body is None:
        body = {"messages": HI} if endpoint == "chat.completions" else {"input": "hi"}
    body = {"model": route.model if route else "gpt-4o-mini", **body}
    c = Call(
        endpoint=endpoint,
        headers=dict(headers or {}),
        raw_body=orjson.dumps(body),
        received_at=at,
    )
    if tenant is not None:
        c.key = api_key(tenant)
    if parsed:
        if endpoint == "embeddings":
            parse_embeddings(c)
        else:
            parse_chat(c, load_json_object(c.raw_body))
        c.resolved(route or _route(str(body["model"])))
    return c


# -- what the rest of the chain does ------------------------------------------------------------

Play = Callable[[Call], None]


def _answered(c: Call, usage: Usage, cost: str | None) -> None:
    c.target = c.targets[0] if c.targets else None
    c.attempts += 1
    c.usage = usage
    c.cost_usd = None if cost is None else Decimal(cost)  # what the meter would price it at


def completion(text: str = "Hello", *, usage: Usage | None = None, cost: str | None = None) -> Play:
    """Play a provider's plain answer: an OpenAI chat completion saying ``text``."""
    used = usage or Usage(input_tokens=10, output_tokens=2)

    def play(c: Call) -> None:
        body = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": c.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        _answered(c, used, cost)
        c.result = Completion(body=orjson.dumps(body), usage=used, upstream_model=c.model or "")

    return play


def stream_event(text: str) -> bytes:
    delta = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }
    return orjson.dumps(delta)


def stream(*texts: str, usage: Usage | None = None, cost: str | None = None) -> Play:
    """Play a provider's stream: one event per text, as dispatch hands it on (first event in)."""
    assert texts, "a stream has at least one event"
    used = usage or Usage(input_tokens=10, output_tokens=len(texts))
    events = [StreamChunk(data=stream_event(t), content_chars=len(t)) for t in texts]

    async def rest() -> AsyncGenerator[StreamChunk, None]:
        for e in events[1:]:
            yield e

    def play(c: Call) -> None:
        _answered(c, used, cost)
        c.result = ChunkStream(first=events[0], rest=rest())

    return play


async def read_stream(c: Call) -> list[bytes]:
    """What a client of the stream would receive, read to the end through the answer path as the
    server reads it, then closed."""
    answer = deliver(c)
    assert isinstance(answer, AnswerStream)
    try:
        return [chunk.data async for chunk in answer if chunk.forward]
    finally:
        await answer.aclose()


async def serve(stage: Stage, c: Call, downstream: Next) -> list[bytes] | None:
    """Run ``stage`` as the server runs the chain: a refusal fails the call; an answer goes
    through the answer path to its end (a stream's events, returned); the deferred work runs
    last, either way."""
    try:
        await stage(c, downstream)
    except APIError as exc:
        c.fail(exc)
        await c.finish()
        raise
    events = None
    if isinstance(c.result, ChunkStream):
        events = await read_stream(c)
    elif c.result is not None:
        deliver(c)  # the plain body through its observers (the idempotency capture...)
    await c.finish()
    return events


@dataclass(frozen=True, slots=True)
class Received:
    """What a call looked like when it reached the rest of the chain."""

    model: str | None  # the route it was on
    targets: tuple[str, ...]
    max_tokens: int | None
    response_headers: dict[str, str]
    decision: str | None


@dataclass
class FakeNext:
    """The rest of the chain: records each call it receives, then plays ``answer`` or raises
    ``raises``; ``during`` runs while the call is downstream (what a stage holds at that point)."""

    answer: Play | None = None
    raises: BaseException | None = None
    during: Callable[[Call], None] | None = None
    received: list[Received] = field(default_factory=list)

    @property
    def reached(self) -> int:
        return len(self.received)

    async def __call__(self, c: Call) -> None:
        self.received.append(
            Received(
                model=c.route.model if c.route is not None else None,
                targets=tuple(t.label for t in c.targets),
                max_tokens=c.max_tokens,
                response_headers=dict(c.response_headers),
                decision=c.annotations.get("decision"),
            )
        )
        if self.during is not None:
            self.during(c)
        if self.raises is not None:
            raise self.raises
        if self.answer is not None:
            self.answer(c)
