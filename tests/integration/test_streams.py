"""Streams through a real gateway: cut by the upstream, abandoned by the client, usage on and off.

Whatever happens to a stream, the ledger gets exactly one row for it: usage as the upstream
reported it when it did (a client that leaves does not stop a remote provider from billing the
whole answer, so the gateway drains it), an estimate marked ``usage_reported = false`` when it
did not.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

KEY = TENANT_KEYS["acme"]
REPLY = "Hello from fake upstream."


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(
        tmp_path_factory.mktemp("streams"), fake_upstream_config(upstream.url)
    ) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess, sdk: Sdk) -> OpenAI:
    return sdk(gw)


def wait_for_row(gw: GatewayProcess, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The call's row (failed attempts before it are rows of their own, left out here)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = gw.ledger_rows("request_id = ? AND status <> 'attempt_failed'", (request_id,))
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(rows) == 1, rows
    return rows[0]


def stream_body(content: str, **fields: Any) -> bytes:
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": content}],
            **fields,
        }
    ).encode()


def sse_data(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [event[len(b"data: ") :] for event in raw.split(b"\n\n") if event.startswith(b"data: ")]


def post_raw(gw: GatewayProcess, body: bytes) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        gw.base_url + "/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def test_stream_cut_by_upstream_ends_with_an_error_event_and_an_estimated_row(
    gw, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    status, headers, raw = post_raw(gw, stream_body("hi #cut:3 #usage:50,7,0"))
    assert status == 200  # the status was sent with the first byte; it cannot change after
    events = sse_data(raw)
    assert b"[DONE]" not in events
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello from"
    last = json.loads(events[-1])
    assert list(last) == ["error"]
    assert sorted(last["error"]) == ["code", "message", "param", "type"]
    assert last["error"]["type"] == "upstream_error" and last["error"]["message"]
    assert fresh_upstream.stats()["requests"] == 1  # bytes were sent: no retry

    row = wait_for_row(gw, headers["x-request-id"])
    assert row["status"] == "upstream_cut"
    assert row["output_tokens"] > 0 and row["input_tokens"] > 0
    assert row["usage_reported"] == 0
    assert row["stream"] == 1
    assert row["cost_pusd"] is not None and row["cost_pusd"] > 0  # estimated, never free


def test_stream_cut_by_upstream_raises_in_the_sdk(client, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi #cut:3"}], stream=True
    )
    seen = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "Hello from"
    assert info.value.type == "upstream_error"


def test_client_that_disconnects_is_metered_with_the_upstream_usage(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = stream_body("hi #chunk_delay:50 #words:40 #usage:20,40,0")
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    try:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        received = b""
        while b"data: " not in received:
            data = sock.recv(65536)
            assert data, "the gateway closed the connection before the first event"
            received += data
    finally:
        sock.close()  # gone after the first chunk; 39 words are still to come
    head = received.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200")
    request_id = next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("x-request-id:")
    )

    row = wait_for_row(gw, request_id)
    assert row["status"] == "client_disconnected"
    assert (row["input_tokens"], row["output_tokens"]) == (20, 40)
    assert row["usage_reported"] == 1
    stats = fresh_upstream.stats()
    assert stats["requests"] == 1


def test_stream_with_include_usage_ends_with_the_usage_chunk(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi #usage:10,4,0"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (10, 4)
    row = wait_for_row(gw, raw.headers["x-request-id"])
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 10, 4)
    assert row["usage_reported"] == 1


def test_stream_without_include_usage_hides_usage_but_meters_it(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    status, headers, raw = post_raw(gw, stream_body("hi #usage:10,4,0"))
    assert status == 200
    events = sse_data(raw)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)
    assert not any(c.get("usage") for c in chunks)
    assert b"completion_tokens" not in raw
    assert fresh_upstream.stats()["last_request"]["stream_options"] == {"include_usage": True}
    row = wait_for_row(gw, headers["x-request-id"])
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 10, 4)
    assert row["usage_reported"] == 1


def test_stream_failing_before_the_first_byte_is_retried(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 503}, {})
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert fresh_upstream.stats()["requests"] == 2
    row = wait_for_row(gw, raw.headers["x-request-id"])
    assert (row["attempt"], row["status"], row["stream"]) == (2, "ok", 1)
    [failed] = gw.ledger_rows("request_id = ? AND attempt = 1", (raw.headers["x-request-id"],))
    assert (failed["status"], failed["error_code"]) == ("attempt_failed", "upstream_http_503")


def test_stream_cut_before_any_event_is_retried(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"cut": 0}, {})
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert fresh_upstream.stats()["requests"] == 2


def test_clients_that_leave_at_once_are_all_metered_and_log_no_error(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    """100 clients send a streamed request and close within ~2 ms: whatever reached the upstream
    has its ledger row, and a client going away is no ERROR in the log."""
    logged_before = len(gw.stderr())
    before = len(gw.ledger_rows())
    body = stream_body("leaving at once #latency:5 #words:30")
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    for _ in range(100):
        sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        sock.sendall(head + body)
        time.sleep(0.002)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # an abrupt close (RST), as a client process that dies
    sent = 0
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        sent = fresh_upstream.stats()["requests"]
        rows = [r for r in gw.ledger_rows()[before:] if r["provider"] is not None]
        if sent and len(rows) >= sent:
            time.sleep(0.3)  # late rows would show as an excess below
            sent = fresh_upstream.stats()["requests"]
            rows = [r for r in gw.ledger_rows()[before:] if r["provider"] is not None]
            break
        time.sleep(0.1)
    assert sent > 0, "no request reached the upstream; the test did not attack anything"
    assert len(rows) == sent, (len(rows), sent)
    upstream_rows = rows
    # a client gone before its answer is recorded as such; on a loaded machine the gateway may
    # also have written a whole (short) answer into the socket before the reset reached it
    statuses = {r["status"] for r in upstream_rows}
    assert "client_disconnected" in statuses and statuses <= {"client_disconnected", "ok"}, statuses
    assert all(r["output_tokens"] == 30 for r in upstream_rows)  # drained: the whole answer
    log = gw.stderr()[logged_before:]
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
