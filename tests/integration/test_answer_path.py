"""The answer path through a real gateway: a stage that rewrites answers is one line in the chain.

A test stage (``tests/fakes/answer_stages.py``) is inserted into the gateway's real chain, just
before dispatch, in front of a scripted provider, and the gateway (SQLite ledger) is served in
process by its own aiohttp app. It upper-cases content, plain and streamed, and restores a
``[[value]]`` whole although the provider splits it across two events. A transformer that fails
fails the call in the answer's own terms (a final error event, a JSON 500), and the call is
still in the ledger; a client that leaves still leaves the stream drained and metered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from yarl import URL

from passerelle.config.load import load_config_text
from passerelle.gateway import Gateway
from passerelle.pipeline.chain import Stage, build_chain
from passerelle.pipeline.targets import Route
from passerelle.providers.base import Provider
from passerelle.server.app import create_app
from passerelle.store.records import UsageRecord
from tests.fakes.answer_stages import (
    CLIENT_SEES,
    MODEL,
    SPLIT,
    Explode,
    Refuse,
    Restore,
    ScriptedProvider,
    Transforming,
    contents,
    scripted_target,
)
from tests.fakes.gateway import TENANT_KEYS, fake_upstream_config

pytestmark = pytest.mark.asyncio(loop_scope="function")

KEY = TENANT_KEYS["acme"]


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
