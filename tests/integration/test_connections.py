"""Client connections as a hostile client holds them: idle, slow headers, slow bodies, too many.

Raw sockets against a real gateway. Idle, slow-header and slow-body connections are closed after
their timeouts; past the connection cap a new client gets a clear 503 in OpenAI's error shape
(with ``Retry-After``) rather than a reset; normal clients keep working throughout. aiohttp's own
parser errors are answered in the same error shape, never echoing the offending bytes.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

KEY = TENANT_KEYS["acme"]
HI = [{"role": "user", "content": "hi"}]
IDLE_S = 2.0
SLOW_S = 0.25  # the head and body timeouts, well under the idle one so each is seen on its own
CAP = 12


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    server = {
        "idle_timeout_s": IDLE_S,
        "header_timeout_s": SLOW_S,
        "body_timeout_s": SLOW_S,
    }
    config = fake_upstream_config(upstream.url, server=server)
    with GatewayProcess(tmp_path_factory.mktemp("connections"), config) as g:
        yield g


@pytest.fixture(scope="module")
def capped(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(upstream.url, server={"max_connections": CAP})
    with GatewayProcess(tmp_path_factory.mktemp("capped"), config) as g:
        yield g


def connect(gw: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10)


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Does the gateway close this connection within ``seconds``? Sends ``trickle`` every 0.1 s
    meanwhile (a slow client), and reads whatever comes back."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle)
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def ask(gw: GatewayProcess, path: str = "/health") -> tuple[int, bytes]:
    with connect(gw) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_an_idle_connection_is_closed_after_the_idle_timeout(gw) -> None:  # type: ignore[no-untyped-def]
    with connect(gw) as sock:
        assert closed_within(sock, 5 * IDLE_S)


def test_a_keep_alive_connection_left_idle_is_closed(gw) -> None:  # type: ignore[no-untyped-def]
    with connect(gw) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in sock.recv(65536)
        assert closed_within(sock, 5 * IDLE_S)


def test_a_slow_header_is_cut_off_after_the_header_timeout(gw) -> None:  # type: ignore[no-untyped-def]
    with connect(gw) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        assert closed_within(sock, IDLE_S * 3 / 4, trickle=b"X")  # before the idle timer


def test_a_slow_body_is_cut_off_after_the_body_timeout_without_an_error_logged(gw) -> None:  # type: ignore[no-untyped-def]
    logged = len(gw.stderr())
    with connect(gw) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        assert closed_within(sock, IDLE_S * 3 / 4, trickle=b" ")
    time.sleep(0.2)
    log = gw.stderr()[logged:]
    assert " ERROR " not in log and "Traceback" not in log, log


def test_normal_clients_are_served_while_slow_ones_are_held_off(gw, sdk: Sdk) -> None:  # type: ignore[no-untyped-def]
    slow = [connect(gw) for _ in range(30)]
    for s in slow:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    client = sdk(gw)
    for _ in range(5):
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert answer.choices[0].message.content
    for s in slow:
        s.close()


def test_past_the_cap_a_new_client_gets_a_clear_503_and_then_is_served_again(capped) -> None:  # type: ignore[no-untyped-def]
    held = [connect(capped) for _ in range(CAP)]
    try:
        time.sleep(0.2)  # every held connection is accepted and counted
        status, body = ask(capped)
        assert status == 503
        err = json.loads(body)["error"]
        assert err["code"] == "too_many_connections" and err["type"] == "server_error"
        with connect(capped) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = sock.recv(65536).split(b"\r\n\r\n")[0].lower()
        assert b"retry-after: " in head and b"connection: close" in head
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while (status := ask(capped)[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer sk-CANARY-" + b"A" * 20000,  # too long
        b"Authorization: Bearer sk-CANARY-\x01\x02",  # a control character
        b"Authorization : Bearer sk-CANARY-x",  # a space before the colon
    ],
    ids=["oversized", "control-character", "bad-name"],
)
def test_a_request_aiohttp_cannot_parse_gets_the_error_shape_and_no_echo(gw, header) -> None:  # type: ignore[no-untyped-def]
    with connect(gw) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 "))
    assert b"application/json" in head.lower()
    err = json.loads(body)["error"]
    assert sorted(err) == ["code", "message", "param", "type"]
    assert err["type"] == "invalid_request_error" and err["code"] == "malformed_http_request"
    assert b"CANARY" not in raw
    assert "CANARY" not in gw.stderr()


@pytest.mark.parametrize(
    ("framing", "code"),
    [
        (
            b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\nzz-CANARY\r\n',  # bad chunk size
            "malformed_http_request",
        ),
        (
            b"Content-Encoding: gzip\r\nContent-Length: 11\r\n\r\n{CANARY:1}",  # not gzip
            "invalid_content_encoding",
        ),
    ],
    ids=["chunk-framing", "not-gzip"],
)
def test_a_body_aiohttp_cannot_decode_gets_a_400_and_one_log_line(gw, framing, code) -> None:  # type: ignore[no-untyped-def]
    logged = len(gw.stderr())
    with connect(gw) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n" + framing
        )
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 ")), raw
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == code
    assert b"CANARY" not in raw
    time.sleep(0.2)
    log = gw.stderr()[logged:]
    assert "Traceback" not in log and " ERROR " not in log and "CANARY" not in log, log
