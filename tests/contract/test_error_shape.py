"""Every error path through a real gateway: one shape, the right status, the right SDK class.

Each error is driven twice, over raw HTTP (to pin the exact bytes: ``{"error": {"message", "type",
"param", "code"}}`` and nothing else) and through the official ``openai`` SDK (to pin the exception
class its users catch). Messages never carry a key or the prompt, so every request below carries
both, and every body is searched for them.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import (
    ADMIN_TOKEN,
    TENANT_KEYS,
    GatewayProcess,
    fake_upstream_config,
)
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

KEY = TENANT_KEYS["acme"]
BOGUS_KEY = "sk-bogus-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-secret"
PROMPT = "confidential-prompt-5c1e"
SECRETS = (KEY, BOGUS_KEY, UPSTREAM_KEY, ADMIN_TOKEN, PROMPT)
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": f"{PROMPT} hi"}]
ERROR_KEYS = ["message", "type", "param", "code"]


# -- servers ---------------------------------------------------------------------------------


class _Garbage(BaseHTTPRequestHandler):
    """An upstream that answers 200 with something that is not JSON."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html>upstream proxy page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def garbage_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, garbage_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(
        upstream.url,
        providers=[
            provider("fake", upstream.base_url),
            provider("slow", upstream.base_url, timeout_s=0.3, max_retries=0),
            provider("garbage", garbage_url, max_retries=0),
        ],
        models=[
            {"name": MODEL, "targets": [{"provider": "fake"}]},
            {"name": "fake-embed", "targets": [{"provider": "fake"}]},
            {"name": "slow-model", "targets": [{"provider": "slow"}]},
            {"name": "garbage-embed", "targets": [{"provider": "garbage"}]},
        ],
    )
    with GatewayProcess(tmp_path_factory.mktemp("contract"), config) as g:
        yield g


@pytest.fixture(scope="module")
def small_gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(upstream.url, server={"max_body_bytes": 2048})
    with GatewayProcess(tmp_path_factory.mktemp("contract-small"), config) as g:
        yield g


_OPEN: list[OpenAI] = []


def sdk(base_url: str, api_key: str = KEY) -> OpenAI:
    """A client for one call; closed when the test ends (see ``close_clients``)."""
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


# -- raw HTTP --------------------------------------------------------------------------------


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    url: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    *,
    method: str = "POST",
    key: str | None = KEY,
    headers: dict[str, str] | None = None,
) -> Raw:
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    h = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return Raw(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Raw(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


_MISSING = object()


def assert_error(
    raw: Raw,
    status: int,
    *,
    type: str | None = None,
    code: Any = _MISSING,
    param: Any = _MISSING,
    request_id: bool = False,
) -> dict[str, Any]:
    """The exact OpenAI error shape, with no secret in it; returns the inner error object."""
    assert raw.status == status, raw.body
    assert raw.headers["content-type"].startswith("application/json")
    text = raw.body.decode()
    for secret in SECRETS:
        assert secret not in text
    assert "Traceback" not in text
    doc = raw.json()
    assert list(doc) == ["error"]
    err = doc["error"]
    assert sorted(err) == sorted(ERROR_KEYS)
    assert isinstance(err["message"], str) and err["message"].strip()
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    if type is not None:
        assert err["type"] == type
    if code is not _MISSING:
        assert err["code"] == code
    if param is not _MISSING:
        assert err["param"] == param
    if request_id:
        assert raw.headers["x-request-id"].startswith("req_")
    return err


def assert_sdk_error(
    exc: openai.APIStatusError, raw_err: dict[str, Any], status: int, request_id: bool = False
) -> None:
    """The SDK saw the same error: status, type, code, param, and the request id."""
    assert exc.status_code == status
    assert isinstance(exc.body, dict) and sorted(exc.body) == sorted(ERROR_KEYS)
    assert isinstance(exc.body["message"], str) and exc.body["message"].strip()
    assert (exc.type, exc.code, exc.param) == (raw_err["type"], raw_err["code"], raw_err["param"])
    for secret in SECRETS:
        assert secret not in str(exc)
    if request_id:
        assert exc.request_id is not None and exc.request_id.startswith("req_")


# -- authentication and authorisation --------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ", f"Basic {KEY}", f"Bearer {BOGUS_KEY}"],
    ids=["missing", "empty", "wrong_scheme", "unknown_key"],
)
def test_missing_or_invalid_key_is_401_authentication_error(gw, authorization) -> None:  # type: ignore[no-untyped-def]
    headers = {} if authorization is None else {"Authorization": authorization}
    raw = http(
        gw.base_url + "/chat/completions",
        {"model": MODEL, "messages": MESSAGES},
        key=None,
        headers=headers,
    )
    assert_error(
        raw, 401, type="authentication_error", code="invalid_api_key", param=None, request_id=True
    )


def test_unknown_key_raises_sdk_authentication_error(gw) -> None:  # type: ignore[no-untyped-def]
    raw_err = assert_error(
        http(
            gw.base_url + "/chat/completions", {"model": MODEL, "messages": MESSAGES}, key=BOGUS_KEY
        ),
        401,
    )
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(gw.base_url, BOGUS_KEY).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert_sdk_error(info.value, raw_err, 401, request_id=True)


def test_missing_key_raises_sdk_authentication_error(gw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(gw.base_url).chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"Authorization": openai.omit}
        )
    assert info.value.code == "invalid_api_key"


def test_models_route_needs_a_key(gw) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/models", method="GET", key=BOGUS_KEY)
    raw_err = assert_error(raw, 401, type="authentication_error", code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(gw.base_url, BOGUS_KEY).models.list()
    assert_sdk_error(info.value, raw_err, 401)


def test_tenant_key_on_admin_is_403_permission_denied(gw) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.url + "/admin/usage", method="GET")
    raw_err = assert_error(raw, 403, type="permission_error", code="permission_denied", param=None)
    with pytest.raises(openai.PermissionDeniedError) as info:
        sdk(gw.url).get("/admin/usage", cast_to=object)
    assert_sdk_error(info.value, raw_err, 403)


def test_admin_without_token_is_401(gw) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.url + "/admin/usage", method="GET", key=None)
    raw_err = assert_error(raw, 401, type="authentication_error", code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(gw.url).get(
            "/admin/usage", cast_to=object, options={"headers": {"Authorization": openai.omit}}
        )
    assert_sdk_error(info.value, raw_err, 401)


@pytest.mark.parametrize(
    ("method", "path", "body", "param", "code"),
    [
        ("GET", "/admin/usage?group_by=colour", None, "group_by", None),
        ("GET", "/admin/usage?since=yesterday-ish", None, "since", None),
        ("GET", "/admin/usage?since=99999999999d", None, "since", None),
        ("GET", "/admin/usage?until=99999999999999999999h", None, "until", None),
        ("POST", "/admin/keys", b"{not json", None, "invalid_json"),
        ("POST", "/admin/keys", b"[1, 2]", "tenant", None),
        ("POST", "/admin/keys", b'{"name": "ci"}', "tenant", None),
        ("POST", "/admin/keys", b'{"tenant": "acme", "name": {"a": 1}}', "name", "invalid_type"),
    ],
    ids=[
        "group_by",
        "since_garbage",
        "since_overflow",
        "until_overflow",
        "keys_bad_json",
        "keys_not_object",
        "keys_no_tenant",
        "keys_name_not_string",
    ],
)
def test_bad_admin_input_is_400(gw, method, path, body, param, code) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.url + path, body, method=method, key=ADMIN_TOKEN)
    raw_err = assert_error(raw, 400, type="invalid_request_error", param=param, code=code)
    admin = sdk(gw.url, ADMIN_TOKEN)
    with pytest.raises(openai.BadRequestError) as info:
        if method == "GET":
            admin.get(path, cast_to=object)
        else:
            admin.post(
                path,
                cast_to=object,
                content=body,
                options={"headers": {"Content-Type": "application/json"}},
            )
    assert_sdk_error(info.value, raw_err, 400)


# -- routing ---------------------------------------------------------------------------------


def test_unknown_model_is_404_model_not_found(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "gpt-9-ultra", "messages": MESSAGES}
    raw = http(gw.base_url + "/chat/completions", body)
    raw_err = assert_error(
        raw, 404, type="not_found_error", code="model_not_found", param="model", request_id=True
    )
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gw.base_url).chat.completions.create(model="gpt-9-ultra", messages=MESSAGES)
    assert_sdk_error(info.value, raw_err, 404, request_id=True)
    assert fresh_upstream.stats()["requests"] == 0


def test_unknown_route_is_404(gw) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/engines/davinci/completions", {"prompt": PROMPT})
    raw_err = assert_error(raw, 404, type="not_found_error", code="unknown_route", param=None)
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gw.base_url).post(
            "/engines/davinci/completions", cast_to=object, body={"prompt": PROMPT}
        )
    assert_sdk_error(info.value, raw_err, 404)


def test_wrong_method_is_405_and_says_what_is_allowed(gw) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", method="GET")
    raw_err = assert_error(raw, 405, type="invalid_request_error", code="method_not_allowed")
    assert "POST" in raw.headers["allow"]
    with pytest.raises(openai.APIStatusError) as info:
        sdk(gw.base_url).get("/chat/completions", cast_to=object)
    assert_sdk_error(info.value, raw_err, 405)


# -- request validation ----------------------------------------------------------------------


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **fields}


def no_model() -> dict[str, Any]:
    return {"messages": MESSAGES}


VALIDATION: list[tuple[str, str, bytes | dict[str, Any] | list[Any], str | None, str]] = [
    ("malformed_json", "chat", b'{"model": "gpt-4o-mini", "messages": [', None, "invalid_json"),
    ("invalid_utf8", "chat", b'{"model": "\xff\xfe"}', None, "invalid_json"),
    ("nan_literal", "chat", b'{"model": "gpt-4o-mini", "temperature": NaN}', None, "invalid_json"),
    ("empty_body", "chat", b"", None, "invalid_json"),
    ("non_object_body", "chat", [MODEL, PROMPT], None, "invalid_json"),
    ("missing_model", "chat", no_model(), "model", "missing_required_parameter"),
    ("model_not_string", "chat", chat(model=4), "model", "invalid_type"),
    ("messages_missing", "chat", {"model": MODEL}, "messages", "missing_required_parameter"),
    ("messages_wrong_type", "chat", chat(messages=PROMPT), "messages", "invalid_type"),
    ("messages_empty", "chat", chat(messages=[]), "messages", "invalid_type"),
    ("message_not_object", "chat", chat(messages=[PROMPT]), "messages[0]", "invalid_type"),
    (
        "bad_role",
        "chat",
        chat(messages=[{"role": "wizard", "content": PROMPT}]),
        "messages[0].role",
        "invalid_value",
    ),
    (
        "content_wrong_type",
        "chat",
        chat(messages=[*MESSAGES, {"role": "user", "content": 7}]),
        "messages[1].content",
        "invalid_type",
    ),
    (
        "content_part_untyped",
        "chat",
        chat(messages=[{"role": "user", "content": [{"t": PROMPT}]}]),
        "messages[0].content[0]",
        "invalid_type",
    ),
    ("max_tokens_string", "chat", chat(max_tokens="10"), "max_tokens", "invalid_value"),
    ("max_tokens_zero", "chat", chat(max_tokens=0), "max_tokens", "invalid_value"),
    ("max_tokens_bool", "chat", chat(max_tokens=True), "max_tokens", "invalid_value"),
    (
        "max_completion_tokens_float",
        "chat",
        chat(max_completion_tokens=1.5),
        "max_completion_tokens",
        "invalid_value",
    ),
    ("temperature_out_of_range", "chat", chat(temperature=2.5), "temperature", "invalid_value"),
    ("temperature_string", "chat", chat(temperature="hot"), "temperature", "invalid_value"),
    ("top_p_out_of_range", "chat", chat(top_p=1.5), "top_p", "invalid_value"),
    ("n_huge", "chat", chat(n=10**30), "n", "invalid_value"),
    ("stream_not_bool", "chat", chat(stream="yes"), "stream", "invalid_type"),
    (
        "stream_options_without_stream",
        "chat",
        chat(stream_options={"include_usage": True}),
        "stream_options",
        "invalid_value",
    ),
    (
        "include_usage_not_bool",
        "chat",
        chat(stream=True, stream_options={"include_usage": "y"}),
        "stream_options.include_usage",
        "invalid_type",
    ),
    ("user_not_string", "chat", chat(user=["u"]), "user", "invalid_type"),
    ("metadata_not_object", "chat", chat(metadata=PROMPT), "metadata", "invalid_type"),
    (
        "feature_invalid",
        "chat",
        chat(metadata={"feature": "no spaces allowed"}),
        "feature",
        "invalid_value",
    ),
    (
        "embeddings_input_missing",
        "embeddings",
        {"model": "fake-embed"},
        "input",
        "missing_required_parameter",
    ),
    (
        "embeddings_input_wrong_type",
        "embeddings",
        {"model": "fake-embed", "input": [PROMPT, 1]},
        "input",
        "invalid_type",
    ),
]


@pytest.mark.parametrize(
    ("endpoint", "body", "param", "code"),
    [case[1:] for case in VALIDATION],
    ids=[case[0] for case in VALIDATION],
)
def test_invalid_request_is_400_bad_request_naming_the_param(
    gw,
    fresh_upstream,
    endpoint,
    body,
    param,  # type: ignore[no-untyped-def]
    code,
) -> None:
    path = "/chat/completions" if endpoint == "chat" else "/embeddings"
    raw = http(gw.base_url + path, body)
    raw_err = assert_error(
        raw, 400, type="invalid_request_error", param=param, code=code, request_id=True
    )
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gw.base_url).post(
            path,
            cast_to=object,
            content=content,
            options={"headers": {"Content-Type": "application/json"}},
        )
    assert_sdk_error(info.value, raw_err, 400, request_id=True)
    assert fresh_upstream.stats()["requests"] == 0  # nothing invalid ever reaches the upstream


def test_sdk_typed_call_with_bad_role_names_the_param(gw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gw.base_url).chat.completions.create(
            model=MODEL,
            messages=[{"role": "wizard", "content": PROMPT}],  # type: ignore[misc,list-item]
        )
    assert info.value.param == "messages[0].role"


def test_oversized_body_is_413(small_gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    body = chat(messages=[{"role": "user", "content": PROMPT + "x" * 4096}])
    raw = http(small_gw.base_url + "/chat/completions", body)
    raw_err = assert_error(
        raw, 413, type="invalid_request_error", code="request_too_large", param=None
    )
    with pytest.raises(openai.APIStatusError) as info:
        sdk(small_gw.base_url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT + "x" * 4096}]
        )
    assert_sdk_error(info.value, raw_err, 413)
    assert fresh_upstream.stats()["requests"] == 0


def test_body_under_the_limit_is_served(small_gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    answer = sdk(small_gw.base_url).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from fake upstream."


# -- upstream failures -----------------------------------------------------------------------


def say(directive: str, **fields: Any) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": f"{PROMPT} {directive}"}], **fields)


def test_upstream_429_after_retries_is_429_rate_limit_error(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", say("#status:429 #retry_after:0"))
    raw_err = assert_error(
        raw, 429, type="rate_limit_error", code="rate_limit_exceeded", param=None, request_id=True
    )
    assert fresh_upstream.stats()["requests"] == 3  # the first attempt and max_retries=2
    assert raw.headers["retry-after"] == "0"  # the provider's own word on when to come back
    with pytest.raises(openai.RateLimitError) as info:
        sdk(gw.base_url).chat.completions.create(**say("#status:429"))
    assert_sdk_error(info.value, raw_err, 429, request_id=True)


def test_upstream_5xx_after_retries_is_502(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", say("#status:500"))
    raw_err = assert_error(
        raw, 502, type="upstream_error", code="upstream_error", param=None, request_id=True
    )
    assert fresh_upstream.stats()["requests"] == 3
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw.base_url).chat.completions.create(**say("#status:502"))
    assert_sdk_error(info.value, raw_err, 502, request_id=True)


def test_upstream_503_after_retries_stays_503(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", say("#status:503"))
    raw_err = assert_error(raw, 503, type="server_error", code="providers_unavailable")
    assert fresh_upstream.stats()["requests"] == 3
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw.base_url).chat.completions.create(**say("#status:503"))
    assert_sdk_error(info.value, raw_err, 503, request_id=True)


def test_upstream_400_is_passed_through_without_retry(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", say("#status:400"))
    raw_err = assert_error(raw, 400, type="invalid_request_error", code=None, request_id=True)
    assert fresh_upstream.stats()["requests"] == 1
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gw.base_url).chat.completions.create(**say("#status:400"))
    assert_sdk_error(info.value, raw_err, 400, request_id=True)
    assert fresh_upstream.stats()["requests"] == 2


def test_upstream_timeout_is_504(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", say("#latency:1500", model="slow-model"))
    raw_err = assert_error(
        raw, 504, type="upstream_error", code="upstream_timeout", request_id=True
    )
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw.base_url).chat.completions.create(**say("#latency:1500", model="slow-model"))
    assert_sdk_error(info.value, raw_err, 504, request_id=True)


def test_stream_failing_before_any_byte_is_a_json_error_not_sse(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    raw = http(gw.base_url + "/chat/completions", say("#status:500", stream=True))
    raw_err = assert_error(raw, 502, type="upstream_error", request_id=True)
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw.base_url).chat.completions.create(**say("#status:500", stream=True))
    assert_sdk_error(info.value, raw_err, 502, request_id=True)


def test_stream_rate_limited_upstream_is_429(gw, fresh_upstream) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.RateLimitError) as info:
        sdk(gw.base_url).chat.completions.create(**say("#status:429", stream=True))
    assert info.value.type == "rate_limit_error"


def test_upstream_answer_that_is_not_json_is_502_not_500(gw) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "garbage-embed", "input": PROMPT}
    raw = http(gw.base_url + "/embeddings", body)
    raw_err = assert_error(raw, 502, type="upstream_error", request_id=True)
    with pytest.raises(openai.InternalServerError) as info:
        sdk(gw.base_url).embeddings.create(model="garbage-embed", input=PROMPT)
    assert_sdk_error(info.value, raw_err, 502, request_id=True)


# -- never a traceback -----------------------------------------------------------------------


ODD_REQUESTS: list[tuple[str, str, bytes | None]] = [
    ("POST", "/v1/chat/completions", b'{"model": "gpt-4o-mini", "messages": [' * 5000),
    ("POST", "/v1/chat/completions", b'{"model": "gpt-4o-mini", "max_tokens": 1e400}'),
    ("POST", "/v1/chat/completions", json.dumps(say("#cut:1")).encode()),
    ("POST", "/v1/chat/completions", json.dumps(say("#status:418")).encode()),
    ("POST", "/v1/chat/completions", json.dumps(say("#status:401")).encode()),
    (
        "POST",
        "/v1/chat/completions",
        json.dumps(
            chat(
                model="slow-model",
                stream=True,
                messages=[{"role": "user", "content": "#latency:1500"}],
            )
        ).encode(),
    ),
    ("POST", "/v1/embeddings", b'{"model": "garbage-embed", "input": [[1, 2], [3]]}'),
    ("POST", "/v1/embeddings", b'{"model": "fake-embed", "input": [[1, "a"]]}'),
    ("DELETE", "/v1/models", None),
    ("POST", "/v1/responses", b'{"model": "gpt-4o-mini", "input": [' * 5000),
    (
        "POST",
        "/v1/responses",
        b'{"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 1e400}',
    ),
    ("POST", "/v1/responses", b'{"model": "gpt-4o-mini", "input": [{"content": [null]}]}'),
    ("POST", "/v1/responses", b'{"model": "gpt-4o-mini", "input": "x", "tools": "all"}'),
    ("POST", "/v1/responses", b'{"model": "gpt-4o-mini", "input": "#cut:1"}'),
    ("POST", "/v1/responses", b'{"model": "gpt-4o-mini", "input": "x", "previous_response_id": 7}'),
    ("GET", "/v1/responses/resp_never_made", None),
    ("DELETE", "/v1/responses", None),
    ("GET", "/admin/usage?since=2024-13-45", None),
    ("GET", "/admin/usage?until=99999999999d", None),
    ("POST", "/admin/keys", b'{"tenant": ["acme"]}'),
    ("GET", "/v1/../../etc/passwd", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), ODD_REQUESTS, ids=[f"{m} {p[:40]}" for m, p, _ in ODD_REQUESTS]
)
def test_no_error_response_contains_a_traceback(gw, fresh_upstream, method, path, body) -> None:  # type: ignore[no-untyped-def]
    key = ADMIN_TOKEN if path.startswith("/admin") else KEY
    raw = http(gw.url + path, body, method=method, key=key)
    assert raw.status >= 400
    assert raw.status != 500, raw.body  # every one of these has a better status than "oops"
    err = assert_error(raw, raw.status)
    assert 'File "' not in err["message"] and "line " not in err["message"]


def test_an_oversized_header_is_refused_and_its_bytes_never_reach_the_log(
    gw: GatewayProcess,
) -> None:
    import socket

    marker = "sk-LOGLEAKCANARY"
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {marker}{'A' * 20000}\r\nContent-Length: 2\r\n\r\n{{}}"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert b" 400 " in status_line
    assert marker not in gw.stderr()
    assert "malformed HTTP request rejected" in gw.stderr()
