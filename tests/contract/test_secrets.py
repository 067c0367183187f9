"""Canary keys and prompts, sent through every path at DEBUG log level, never come back out.

The gateway runs with ``--log-level debug``, a canary tenant key, a canary upstream key and a canary
admin token; every request carries a canary prompt. Each path is driven (answers, streams, every
kind of upstream failure, refusals of every kind, replays, hostile bodies, a client that leaves
mid-stream, the admin API), and then the whole log, every admin answer and every error body are
searched for the canaries. The route x role matrix is tests/contract/test_route_roles.py.
"""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract.test_error_shape import Raw, http
from tests.fakes.gateway import GatewayProcess, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

KEY = "sk-canary-tenant-7f3a9c2e41"
BOGUS = "sk-canary-bogus-5d81b0aa"
UPSTREAM_KEY = "sk-canary-upstream-c4e2"
ADMIN = "adm-canary-9b17e0"
PROMPT = "canary-prompt-0e6f1d"
CANARIES = (KEY, BOGUS, UPSTREAM_KEY, ADMIN, PROMPT)


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(
        upstream.url,
        providers=[
            provider("fake", upstream.base_url),
            provider("slow", upstream.base_url, timeout_s=0.3, max_retries=0),
        ],
        models=[
            {"name": "gpt-4o-mini", "targets": [{"provider": "fake"}]},
            {"name": "fake-embed", "targets": [{"provider": "fake"}]},
            {"name": "slow-model", "targets": [{"provider": "slow"}]},
        ],
    )
    env = {
        "TENANT_KEY_ACME": KEY,
        "FAKE_UPSTREAM_KEY": UPSTREAM_KEY,
        "PASSERELLE_ADMIN_TOKEN": ADMIN,
    }
    workdir = tmp_path_factory.mktemp("secrets")
    with GatewayProcess(workdir, config, env=env, args=["--log-level", "debug"]) as g:
        yield g


def chat(text: str = "", **fields: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"{PROMPT} {text}"}],
        **fields,
    }


def drive_every_path(gw: GatewayProcess) -> list[Raw]:
    v1 = gw.base_url
    answers = [
        http(v1 + "/chat/completions", chat(), key=KEY),
        http(v1 + "/chat/completions", chat(stream=True), key=KEY),
        http(v1 + "/embeddings", {"model": "fake-embed", "input": PROMPT}, key=KEY),
        http(v1 + "/models", method="GET", key=KEY),
        # every kind of upstream failure
        http(v1 + "/chat/completions", chat("#status:500"), key=KEY),
        http(v1 + "/chat/completions", chat("#status:429"), key=KEY),
        http(v1 + "/chat/completions", chat("#status:400"), key=KEY),
        http(v1 + "/chat/completions", chat("#status:401"), key=KEY),
        http(v1 + "/chat/completions", chat("#cut:2", stream=True), key=KEY),
        http(v1 + "/chat/completions", chat("#cut:0"), key=KEY),
        http(v1 + "/chat/completions", chat("#latency:1500", model="slow-model"), key=KEY),
        # refusals
        http(v1 + "/chat/completions", chat(), key=BOGUS),
        http(v1 + "/chat/completions", chat(), key=None, headers={"Authorization": f"Basic {KEY}"}),
        http(v1 + "/chat/completions", chat(model="no-such-model"), key=KEY),
        http(v1 + "/chat/completions", chat(temperature=PROMPT), key=KEY),
        http(
            v1 + "/chat/completions",
            {"model": "gpt-4o-mini", "messages": [{"role": PROMPT, "content": PROMPT}]},
            key=KEY,
        ),
        http(v1 + "/chat/completions", chat(user=PROMPT * 100), key=KEY),
        http(v1 + "/chat/completions", chat(**{PROMPT: [[[[[[[[PROMPT]]]]]]]] * 20}), key=KEY),
        http(
            v1 + "/chat/completions",
            b'{"model": "gpt-4o-mini", "'
            + PROMPT.encode()
            + b'": '
            + b"[" * 300
            + b"]" * 300
            + b"}",
            key=KEY,
        ),
        http(v1 + "/chat/completions", PROMPT.encode(), key=KEY),
        http(
            v1 + "/chat/completions",
            json.dumps(chat()).encode(),
            key=KEY,
            headers={"Content-Encoding": "gzip"},
        ),
        http(
            v1 + "/chat/completions",
            gzip.compress(json.dumps(chat()).encode()),
            key=KEY,
            headers={"Content-Encoding": "gzip"},
        ),
        http(
            v1 + "/chat/completions",
            chat(),
            key=KEY,
            headers={"X-Passerelle-Feature": PROMPT + " x"},
        ),
        # idempotency: first, replay, conflict
        http(v1 + "/chat/completions", chat(), key=KEY, headers={"Idempotency-Key": PROMPT}),
        http(v1 + "/chat/completions", chat(), key=KEY, headers={"Idempotency-Key": PROMPT}),
        http(v1 + "/chat/completions", chat("other"), key=KEY, headers={"Idempotency-Key": PROMPT}),
        # the admin API, with the wrong keys and the right one
        http(gw.url + "/admin/usage", method="GET", key=KEY),
        http(gw.url + "/admin/usage", method="GET", key=BOGUS),
        # (admin parameters are identifiers an answer may quote: no prompt canary in them)
        http(gw.url + "/admin/keys", {"tenant": "acme-typo"}, key=ADMIN),
        http(gw.url + "/admin/keys", {"tenant": "acme", "name": "ci\x00"}, key=ADMIN),
        http(gw.url + "/admin/keys", {"tenant": "acme", "name": "ci"}, key=ADMIN),
        http(
            gw.url + "/admin/revenue",
            {"tenant": "acme", "period": "2026-13", "amount": 1},
            key=ADMIN,
        ),
        http(
            gw.url + "/admin/revenue",
            {"tenant": "acme", "period": "2026-01", "amount": 9},
            key=ADMIN,
        ),
        http(gw.url + "/admin/usage?since=" + "9" * 5000, method="GET", key=ADMIN),
        http(gw.url + "/admin/margins?period=0000-01", method="GET", key=ADMIN),
        http(gw.url + "/nowhere", method="GET", key=KEY),
    ]
    leave_mid_stream(gw)
    # what an operator reads afterwards
    for path in (
        "/admin/usage?group_by=tenant,key,feature,user,model",
        "/admin/keys",
        "/admin/revenue",
        "/admin/margins",
        "/health",
        "/openapi.json",
    ):
        answers.append(http(gw.url + path, method="GET", key=ADMIN))
    return answers


def leave_mid_stream(gw: GatewayProcess) -> None:
    body = json.dumps(chat("#words:400 #chunk_delay:5", stream=True)).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request)
        sock.recv(4096)


def test_no_canary_reaches_a_log_an_answer_or_an_error(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    answers = drive_every_path(gw)
    served = [a for a in answers if a.status < 400]
    refused = [a for a in answers if a.status >= 400]
    assert len(served) >= 10 and len(refused) >= 20  # the paths were really taken
    assert not [a for a in answers if a.status == 500], [a.body for a in answers if a.status == 500]
    admin_answers = [a for a in served if b'"object"' in a.body and b"choices" not in a.body]
    for a in refused + admin_answers:
        text = a.body.decode(errors="replace")
        for canary in CANARIES:
            assert canary not in text, (a.status, text[:300])
    log = gw.stderr()
    assert " DEBUG " in log  # the level really was debug
    for canary in CANARIES:
        assert canary not in log, log[max(0, log.find(canary) - 300) : log.find(canary) + 100]
