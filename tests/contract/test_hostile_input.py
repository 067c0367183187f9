"""Hostile input: the seed corpus of requests that once made the gateway answer 500.

Each case was a crash on a real gateway (a ``RecursionError`` in the token estimate, orjson's dump
depth, a gzip header on a plain body, ``int()`` of 5,000 digits, year 0, a revenue of 1e20). Each is
now a 400 in OpenAI's error shape that names the ``param``, logged in at most one line: the gateway's
log holds no traceback after the whole corpus. The schemathesis run (tests/integration/test_fuzz.py)
explores around these; this file keeps the ones already found from coming back.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.contract.test_error_shape import MESSAGES, MODEL, PROMPT, assert_error, http
from tests.fakes.gateway import ADMIN_TOKEN, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(
        tmp_path_factory.mktemp("hostile"), fake_upstream_config(upstream.url)
    ) as g:
        yield g


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def raw_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


CHAT_CASES: list[tuple[str, bytes, str | None]] = [
    (
        "tools_254_deep",
        json.dumps({"model": MODEL, "messages": MESSAGES, "tools": nested(254)}).encode(),
        "tools",
    ),
    (
        "extra_field_300_deep",
        json.dumps({"model": MODEL, "messages": MESSAGES, "extra": nested(300)}).encode(),
        "extra",
    ),
    (
        "content_part_1000_deep",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", '
        b'"text": ' + raw_nested(990) + b"}]}]}",
        "messages",
    ),
    (
        "metadata_500_deep",
        json.dumps({"model": MODEL, "messages": MESSAGES, "metadata": {"x": nested(500)}}).encode(),
        "metadata",
    ),
]


@pytest.mark.parametrize(
    ("body", "param"), [c[1:] for c in CHAT_CASES], ids=[c[0] for c in CHAT_CASES]
)
def test_deeply_nested_json_is_400_naming_the_field(gw, fresh_upstream, body, param) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", body)
    err = assert_error(raw, 400, type="invalid_request_error", code="invalid_json", param=param)
    assert "deep" in err["message"]
    assert fresh_upstream.stats()["requests"] == 0


def test_deeply_nested_embeddings_input_is_400(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = b'{"model": "fake-embed", "input": ' + raw_nested(600) + b"}"
    raw = http(gw.base_url + "/embeddings", body)
    assert_error(raw, 400, code="invalid_json", param="input")


def test_nesting_within_the_limit_is_served(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = {"model": MODEL, "messages": MESSAGES, "metadata": {"deep": nested(40)}}
    raw = http(gw.base_url + "/chat/completions", body)
    assert raw.status == 200, raw.body


def test_gzip_header_on_a_plain_body_is_400(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    for encoding in ("gzip", "deflate"):
        raw = http(gw.base_url + "/chat/completions", body, headers={"Content-Encoding": encoding})
        assert_error(raw, 400, code="invalid_content_encoding", param=None)
    assert fresh_upstream.stats()["requests"] == 0


def test_unsupported_content_encoding_is_400(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    # (br and zstd without their decoders are refused by aiohttp's parser, before any handler)
    for encoding in ("compress", "x-made-up", "gzip, gzip"):
        raw = http(gw.base_url + "/chat/completions", body, headers={"Content-Encoding": encoding})
        assert_error(raw, 400, code="unsupported_content_encoding", param=None)
    assert fresh_upstream.stats()["requests"] == 0


def test_a_gzipped_body_is_decoded_and_served(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = gzip.compress(json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    raw = http(gw.base_url + "/chat/completions", body, headers={"Content-Encoding": "gzip"})
    assert raw.status == 200, raw.body


def test_a_gzip_bomb_is_413_not_inflated(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    # 64 MiB of spaces compress to ~64 KiB; inflated it is far past max_body_bytes
    bomb = gzip.compress(b'{"model": "gpt-4o-mini", "x": "' + b" " * (64 << 20) + b'"}', 9)
    raw = http(gw.base_url + "/chat/completions", bomb, headers={"Content-Encoding": "gzip"})
    assert_error(raw, 413, code="request_too_large")
    assert fresh_upstream.stats()["requests"] == 0


ADMIN_CASES: list[tuple[str, str, str, bytes | None, str]] = [
    ("since_5000_digits", "GET", "/admin/usage?since=" + "9" * 5000 + "d", None, "since"),
    ("until_5000_digits", "GET", "/admin/usage?until=" + "1" * 5000 + "h", None, "until"),
    ("since_long_garbage", "GET", "/admin/usage?since=" + "2024-01-01" * 500, None, "since"),
    ("since_year_0", "GET", "/admin/usage?since=0000-01-01", None, "since"),
    ("period_year_0", "GET", "/admin/margins?period=0000-01", None, "period"),
    ("period_year_9999", "GET", "/admin/margins?period=9999-12", None, "period"),
    (
        "revenue_1e20",
        "POST",
        "/admin/revenue",
        b'{"tenant": "acme", "period": "2026-01", "amount": 1e20}',
        "amount",
    ),
    (  # found by the fuzzer: past the ledger's 64-bit pico-dollar column
        "revenue_past_64_bits",
        "POST",
        "/admin/revenue",
        b'{"tenant": "acme", "period": "1970-09", "amount": 143995732051.95673}',
        "amount",
    ),
    (
        "revenue_sub_micro",
        "POST",
        "/admin/revenue",
        b'{"tenant": "acme", "period": "2026-01", "amount": "0.0000001"}',
        "amount",
    ),
    (
        "revenue_exponent",
        "POST",
        "/admin/revenue",
        b'{"tenant": "acme", "period": "2026-01", "amount": "1E+999999"}',
        "amount",
    ),
    (
        "revenue_bool",
        "POST",
        "/admin/revenue",
        b'{"tenant": "acme", "period": "2026-01", "amount": true}',
        "amount",
    ),
    (
        "revenue_period_year_0",
        "POST",
        "/admin/revenue",
        b'{"tenant": "acme", "period": "0000-01", "amount": 5}',
        "period",
    ),
    (
        "revenue_tenant_object",
        "POST",
        "/admin/revenue",
        b'{"tenant": {"a": 1}, "period": "2026-01", "amount": 5}',
        "tenant",
    ),
    (
        "revenue_nested",
        "POST",
        "/admin/revenue",
        b'{"tenant": "acme", "period": "2026-01", "amount": ' + raw_nested(400) + b"}",
        "amount",
    ),
    # found by the fuzzer: on PostgreSQL a NUL in a query was a 503 "ledger unreachable"
    ("keys_tenant_nul", "GET", "/admin/keys?tenant=a%00b", None, "tenant"),
    ("keys_nested", "POST", "/admin/keys", b'{"tenant": ' + raw_nested(400) + b"}", "tenant"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [c[1:] for c in ADMIN_CASES],
    ids=[c[0] for c in ADMIN_CASES],
)
def test_hostile_admin_input_is_400_naming_the_param(gw, method, path, body, param) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.url + path, body, method=method, key=ADMIN_TOKEN)
    assert_error(raw, 400, type="invalid_request_error", param=param)


def test_sane_revenue_is_still_recorded(gw) -> None:  # type: ignore[no-untyped-def]
    body = b'{"tenant": "acme", "period": "2026-02", "amount": "1234.56"}'
    raw = http(gw.url + "/admin/revenue", body, key=ADMIN_TOKEN)
    assert raw.status == 201, raw.body
    margins = http(gw.url + "/admin/margins?period=2026-02", method="GET", key=ADMIN_TOKEN)
    assert margins.status == 200, margins.body


def test_the_corpus_leaves_no_traceback_in_the_log(gw) -> None:  # type: ignore[no-untyped-def]
    # runs last in this module: every case above has been sent to this gateway
    log = gw.stderr()
    assert "Traceback" not in log
    assert "RecursionError" not in log
    assert PROMPT not in log
    # each refusal is one line that names what was wrong, not what was sent
    refusals = [line for line in log.splitlines() if "request refused: 400 invalid_json" in line]
    assert any("param=tools" in line for line in refusals)
    assert all(len(line) < 300 for line in log.splitlines())
