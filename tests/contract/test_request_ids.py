"""Every answer carries an ``x-request-id``, the refusals that never reach a handler included.

Each path below is a different place an answer comes from: the router (an unknown route, a
method a route does not take), the body reader (a body over ``server.max_body_bytes``), the admin
door (no credential, a wrong one, a tenant's key), the connection guard (a request that is not
HTTP), a handler (a completion, the models list). The admin door answers 401
``authentication_error`` for a missing or wrong credential and 403 only for a valid credential
without the right.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

KEY = TENANT_KEYS["acme"]
CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(upstream.url, server={"max_body_bytes": 2048})
    with GatewayProcess(tmp_path_factory.mktemp("request-ids"), config) as g:
        yield g


def answer(
    gw: GatewayProcess, method: str, path: str, body: str | None, token: str | None
) -> tuple[int, dict[str, str], dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body.encode() if body is not None else None
    req = urllib.request.Request(gw.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.load(resp)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.load(exc)


PATHS = [
    ("completion", "POST", "/v1/chat/completions", CHAT, KEY, 200, None),
    ("models", "GET", "/v1/models", None, KEY, 200, None),
    ("unknown_route", "GET", "/v1/nowhere", None, KEY, 404, "unknown_route"),
    ("unknown_model", "GET", "/v1/models/gpt-9", None, KEY, 404, "model_not_found"),
    ("wrong_method", "DELETE", "/v1/models", None, KEY, 405, "method_not_allowed"),
    ("body_too_large", "POST", "/v1/chat/completions", "x" * 5000, KEY, 413, "request_too_large"),
    ("invalid_json", "POST", "/v1/chat/completions", "{", KEY, 400, "invalid_json"),
    ("no_key", "POST", "/v1/chat/completions", CHAT, None, 401, "invalid_api_key"),
    ("admin_no_credential", "GET", "/admin/usage", None, None, 401, "invalid_api_key"),
    ("admin_wrong_token", "GET", "/admin/usage", None, "adm-wrong", 401, "invalid_api_key"),
    ("admin_tenant_key", "GET", "/admin/usage", None, KEY, 403, "permission_denied"),
    ("admin", "GET", "/admin/keys", None, ADMIN_TOKEN, 200, None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "token", "status", "code"),
    [p[1:] for p in PATHS],
    ids=[p[0] for p in PATHS],
)
def test_every_answer_carries_a_request_id(
    gw: GatewayProcess,
    fresh_upstream: UpstreamProcess,
    method: str,
    path: str,
    body: str | None,
    token: str | None,
    status: int,
    code: str | None,
) -> None:
    got, headers, doc = answer(gw, method, path, body, token)
    assert got == status, doc
    assert headers["x-request-id"].startswith("req_")
    if code is not None:
        error = doc["error"]
        assert isinstance(error, dict) and error["code"] == code


def test_a_wrong_admin_token_is_an_authentication_error(gw: GatewayProcess) -> None:
    _, _, doc = answer(gw, "GET", "/admin/usage", None, "adm-wrong")
    error = doc["error"]
    assert isinstance(error, dict) and error["type"] == "authentication_error"


def test_two_answers_have_two_ids(gw: GatewayProcess) -> None:
    ids = {answer(gw, "GET", "/v1/nowhere", None, KEY)[1]["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_a_request_that_is_not_http_is_answered_with_a_request_id(gw: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        head = sock.recv(4096).split(b"\r\n\r\n", 1)[0].decode().lower()
    assert " 400 " in head.splitlines()[0]
    assert "x-request-id: req_" in head
