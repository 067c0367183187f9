"""The answer path: a stage that rewrites answers is a small module plus one line in the chain.

A test stage (``UpperCase``) is inserted into the gateway's real chain, just before dispatch,
in front of a scripted provider, and the gateway is served in process by its own aiohttp app:
it upper-cases content, plain and streamed, and restores a ``[[value]]`` whole even when the
provider splits it across two events (it holds the partial value back). A transformer that fails
fails the call in the answer's own terms (a final error event, a JSON 500) and the call is still
in the ledger. Batching survives a transformer: what arrived together leaves together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from yarl import URL

from passerelle.config.load import load_config_text
from passerelle.errors import PermissionDeniedError
from passerelle.gateway import Gateway
from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.chain import Next, Stage, build_chain
from passerelle.pipeline.context import AnswerObserver, AnswerTransformer, Call, ChunkStream
from passerelle.pipeline.resolve import Route, Target
from passerelle.providers.base import (
    Capabilities,
    Completion,
    Embeddings,
    Provider,
    StreamChunk,
    UpstreamRequest,
    Usage,
)
from passerelle.providers.resilience import CircuitBreaker
from passerelle.server.app import create_app
from passerelle.store.records import UsageRecord
from tests.fakes.gateway import TENANT_KEYS, fake_upstream_config

pytestmark = pytest.mark.asyncio(loop_scope="function")

KEY = TENANT_KEYS["acme"]
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
    breaker = CircuitBreaker(failures=5, cooldown_s=30.0)
    return Target(provider, MODEL, None, breaker, max_retries=0, retry_backoff_s=0.0)


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start the gateway with a stage inserted right before dispatch; yields (url, gateway)."""
    servers: list[TestServer] = []

    async def start(stage: Stage, provider: Provider | None = None) -> tuple[str, Gateway]:
        config = fake_upstream_config("http://127.0.0.1:9")  # the provider is replaced below
        config["store"] = f"sqlite:///{tmp_path}/ledger.db"
        config["ledger"] = {"data_dir": str(tmp_path)}
        env = {"FAKE_UPSTREAM_KEY": "k", "PASSERELLE_ADMIN_TOKEN": "a"}
        env |= {f"TENANT_KEY_{name.upper()}": key for name, key in TENANT_KEYS.items()}
        gateway = Gateway.from_config(load_config_text(orjson.dumps(config).decode(), env=env))
        price = gateway.routes[MODEL].targets[0].price
        target = dataclasses.replace(
            scripted_target(provider or ScriptedProvider(SPLIT)), price=price
        )
        gateway.routes[MODEL] = Route(model=MODEL, targets=(target,))
        stages = gateway.stages()
        stages.insert(len(stages) - 1, stage)  # one line in the chain: before dispatch
        gateway.chain = build_chain(stages)
        server = TestServer(create_app(gateway))
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1/chat/completions")), gateway

    yield start
    for server in servers:
        await server.close()


async def post(url: str, **fields: Any) -> tuple[int, dict[str, str], bytes]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    async with (
        ClientSession() as session,
        session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


def sse_payloads(raw: bytes) -> list[bytes]:
    return [e[len(b"data: ") :] for e in raw.split(b"\n\n") if e.startswith(b"data: ")]


def contents(payloads: list[bytes]) -> list[str]:
    found = []
    for p in payloads:
        choices = orjson.loads(p).get("choices") or [{}]
        if "content" in choices[0].get("delta", {}):
            found.append(choices[0]["delta"]["content"])
    return found


async def call_row(gateway: Gateway, request_id: str, wait_s: float = 0.0) -> UsageRecord:
    """The call's row (waited for up to ``wait_s``: a call the client left ends on its own)."""
    deadline = time.monotonic() + wait_s
    while not (rows := await gateway.ledger.records(request_id)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(rows) == 1, rows
    return rows[0]


async def test_a_stage_upper_cases_a_plain_answer(serve: Callable[[Stage], Any]) -> None:
    url, gateway = await serve(Transforming(Restore))
    status, headers, raw = await post(url)
    assert status == 200
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == (
        "BONJOUR [[JEAN DUPONT]] À BIENTÔT."
    )
    row = await call_row(gateway, headers["x-request-id"])
    assert row.status == "ok" and (row.input_tokens, row.output_tokens) == (10, 5)


async def test_a_stage_upper_cases_a_stream_and_restores_a_split_value_whole(
    serve: Callable[[Stage], Any],
) -> None:
    url, gateway = await serve(Transforming(Restore))
    status, headers, raw = await post(url, stream=True)
    assert status == 200
    payloads = sse_payloads(raw)
    assert payloads[-1] == b"[DONE]"
    # the partial "[[jean" event was held back, and the value left whole in the next one
    assert contents(payloads[:-1]) == CLIENT_SEES
    row = await call_row(gateway, headers["x-request-id"])
    assert row.status == "ok" and row.usage_reported and row.output_tokens == 5


async def test_a_client_that_leaves_at_once_leaves_the_stream_drained_and_metered(
    serve: Callable[..., Any],
) -> None:
    """Under a transformer as without one: the remote stream is read to its end after the client
    left, through the answer path, so the meter sees the provider's usage."""
    gate = asyncio.Event()
    url, gateway = await serve(Transforming(Restore), ScriptedProvider(SPLIT, gate, tail=300))
    where = URL(url)
    reader, writer = await asyncio.open_connection(where.host, where.port)
    body = orjson.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    received = b""
    while b"data: " not in received:
        data = await reader.read(65536)
        assert data, "the gateway closed the connection before the first event"
        received += data
    writer.close()  # gone after the first event; 300 are still to come
    await writer.wait_closed()
    gate.set()
    head = received.split(b"\r\n\r\n", 1)[0].decode().lower()
    request_id = head.split("x-request-id:", 1)[1].split("\r\n", 1)[0].strip()
    row = await call_row(gateway, request_id, wait_s=10.0)
    assert row.status == "client_disconnected"
    assert (row.input_tokens, row.output_tokens, row.usage_reported) == (10, 5, True)


async def test_a_failing_transformer_ends_the_stream_with_an_error_event_and_is_metered(
    serve: Callable[[Stage], Any],
) -> None:
    url, gateway = await serve(Transforming(Explode))
    status, headers, raw = await post(url, stream=True)
    assert status == 200  # the status left with the first bytes
    payloads = sse_payloads(raw)
    assert contents(payloads[:-1]) == ["Bonjour ", "[[jean"]
    error = orjson.loads(payloads[-1])
    assert list(error) == ["error"] and sorted(error["error"]) == [
        "code",
        "message",
        "param",
        "type",
    ]
    row = await call_row(gateway, headers["x-request-id"])
    assert row.status == "error" and row.stream
    assert row.output_tokens > 0 and row.cost_usd is not None and row.cost_usd > 0


async def test_a_transformer_that_refuses_ends_the_stream_with_its_own_error(
    serve: Callable[[Stage], Any],
) -> None:
    url, gateway = await serve(Transforming(Refuse))
    status, headers, raw = await post(url, stream=True)
    assert status == 200
    error = orjson.loads(sse_payloads(raw)[-1])["error"]
    assert (error["type"], error["code"]) == ("permission_error", "answer_refused")
    row = await call_row(gateway, headers["x-request-id"])
    assert (row.status, row.error_code) == ("error", "answer_refused")


async def test_a_failing_transformer_fails_a_plain_answer_with_a_json_500_and_is_metered(
    serve: Callable[[Stage], Any],
) -> None:
    url, gateway = await serve(Transforming(Explode))
    status, headers, raw = await post(url)
    assert status == 500
    assert sorted(orjson.loads(raw)["error"]) == ["code", "message", "param", "type"]
    row = await call_row(gateway, headers["x-request-id"])
    assert row.status == "error" and (row.input_tokens, row.output_tokens) == (10, 5)
    assert row.cost_usd is not None and row.cost_usd > 0  # the provider answered: it bills


class Seen(AnswerObserver):
    def __init__(self, into: list[str]) -> None:
        self.into = into

    def event(self, call: Call, chunk: StreamChunk) -> None:
        self.into.extend(contents([chunk.data]) if chunk.forward else [])


async def stream_call(events: list[tuple[str, bool]], *stages: Stage) -> AnswerStream:
    """A call through a chain of the given stages and dispatch, its answer not yet read."""
    from passerelle.pipeline.dispatch import Dispatch

    call = Call(endpoint="chat.completions", headers={}, raw_body=b"", stream=True)
    call.route = Route(model=MODEL, targets=(scripted_target(ScriptedProvider(events)),))
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
