"""Outbound attempts through a real gateway: an observer registered at start-up sees each one.

The gateway (SQLite ledger) is built with a recording attempt observer (one argument at
start-up, ``tests/fakes/target_stages.py``) and served in process, in front of the fake
upstream. A stream's attempt is still open when its first event was sent and ends once its last
event has been read; a retried call is two attempts and its failed one still a ledger row; a
stream the upstream cuts ends as ``upstream_cut``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from passerelle.config.load import load_config_text
from passerelle.gateway import Gateway
from passerelle.server.app import create_app
from tests.fakes.gateway import TENANT_KEYS, fake_upstream_config
from tests.fakes.target_stages import Recording
from tests.fakes.upstream import UpstreamProcess

pytestmark = pytest.mark.asyncio(loop_scope="function")

KEY = TENANT_KEYS["acme"]


@pytest_asyncio.fixture(loop_scope="function")  # the server runs on the test's loop
async def serve(
    tmp_path: Path, fresh_upstream: UpstreamProcess
) -> AsyncIterator[tuple[str, Gateway, Recording]]:
    config = fake_upstream_config(fresh_upstream.url)
    config["store"] = f"sqlite:///{tmp_path}/ledger.db"
    config["ledger"] = {"data_dir": str(tmp_path)}
    env = {"FAKE_UPSTREAM_KEY": "k", "PASSERELLE_ADMIN_TOKEN": "a"}
    env |= {f"TENANT_KEY_{name.upper()}": key for name, key in TENANT_KEYS.items()}
    seen = Recording()
    loaded = load_config_text(orjson.dumps(config).decode(), env=env)
    gateway = Gateway.from_config(loaded, attempt_observers=[seen])
    server = TestServer(create_app(gateway))
    await server.start_server()
    yield str(server.make_url("/v1/chat/completions")), gateway, seen
    await server.close()


def body(content: str, **fields: Any) -> bytes:
    messages = [{"role": "user", "content": content}]
    return orjson.dumps({"model": "gpt-4o-mini", "messages": messages, **fields})


async def test_a_streamed_attempt_ends_after_its_last_event(
    serve: tuple[str, Gateway, Recording],
) -> None:
    url, _, seen = serve
    sent = body("hi #words:5 #chunk_delay:20", stream=True)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with ClientSession() as session, session.post(url, data=sent, headers=headers) as resp:
        assert resp.status == 200
        await resp.content.readuntil(b"\n\n")  # the first event is the client's...
        assert len(seen.starts) == 1 and seen.ends == []  # ...and the attempt goes on
        raw = await resp.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    (ended,) = seen.ends
    assert (ended.provider, ended.upstream_model, ended.n) == ("fake", "gpt-4o-mini", 1)
    assert ended.outcome == "ok" and ended.stream and ended.request_bytes == len(sent)
    assert ended.ttfb_ms is not None and ended.latency_ms is not None
    # the fake waits 20 ms between events: the attempt spans them all
    assert ended.latency_ms >= ended.ttfb_ms + 5 * 20


async def test_a_retried_call_is_two_attempts_and_keeps_its_ledger_row(
    serve: tuple[str, Gateway, Recording], fresh_upstream: UpstreamProcess
) -> None:
    url, gateway, seen = serve
    fresh_upstream.script({"status": 503}, {"status": 200})
    async with (
        ClientSession() as session,
        session.post(url, data=body("hi"), headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        assert resp.status == 200
        request_id = resp.headers["x-request-id"]
    assert [(a.n, a.outcome) for a in seen.ends] == [(1, "upstream_http_503"), (2, "ok")]
    rows = await gateway.ledger.records(request_id)
    assert sorted((r.attempt, r.status, r.error_code) for r in rows) == [
        (1, "attempt_failed", "upstream_http_503"),
        (2, "ok", None),
    ]


async def test_a_stream_the_upstream_cuts_ends_as_cut(
    serve: tuple[str, Gateway, Recording],
) -> None:
    url, _, seen = serve
    sent = body("hi #words:5 #cut:3", stream=True)
    async with (
        ClientSession() as session,
        session.post(url, data=sent, headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        await resp.read()
    assert [(a.n, a.outcome) for a in seen.ends] == [(1, "upstream_cut")]
