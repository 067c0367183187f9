"""Every upstream status, from each kind of HTTP provider, reaches the client with its meaning.

The fake upstream answers each status in its own wire format (OpenAI's error object, Anthropic's
``{"type": "error", ...}``), with what a real one says in it. Through the real gateway, over raw
HTTP and through the official ``openai`` SDK: a rejection keeps its status, ``type``, ``code`` and
``param`` (``context_length_exceeded`` stays itself, so a client's "trim and retry" runs); a 429 or
a 503 keeps its ``Retry-After``; the gateway's own credentials refused upstream is the gateway's
502, not the client's 401; a 5xx is a 502 (a 503 stays a 503, a 504 a 504). Each case has its own
upstream model, so one case's cooling after a ``Retry-After`` cannot touch another's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.contract.test_error_shape import assert_error, http
from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.gateway import openai_provider as provider
from tests.fakes.upstream import UpstreamProcess

KEY = TENANT_KEYS["acme"]
OPENAI_TOO_LONG = {
    "message": "This model's maximum context length is 128000 tokens. However, your messages "
    "resulted in 130500 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded",
}
ANTHROPIC_TOO_LONG = {"message": "prompt is too long: 210000 tokens > 200000 maximum"}


@dataclass(frozen=True)
class Case:
    kind: str  # the provider's kind: "openai" | "anthropic"
    status: int  # what the upstream answers
    expect: int  # what the client gets
    code: str | None
    sdk_error: type[openai.APIStatusError]
    param: str | None = None
    type: str | None = None
    retry_after: str | None = None
    error: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return f"{self.kind}-{self.status}-{self.retry_after or 'none'}-{self.code or 'none'}"


CASES = [
    Case(
        "openai",
        400,
        400,
        "context_length_exceeded",
        openai.BadRequestError,
        "messages",
        "invalid_request_error",
        error=OPENAI_TOO_LONG,
    ),
    Case("openai", 400, 400, None, openai.BadRequestError, type="invalid_request_error"),
    Case("openai", 401, 502, "upstream_credentials_refused", openai.InternalServerError),
    Case("openai", 403, 502, "upstream_credentials_refused", openai.InternalServerError),
    Case("openai", 404, 404, "model_not_found", openai.NotFoundError),
    Case("openai", 409, 502, "upstream_error", openai.InternalServerError),
    Case("openai", 413, 413, None, openai.APIStatusError, type="invalid_request_error"),
    Case(
        "openai",
        422,
        422,
        "invalid_value",
        openai.UnprocessableEntityError,
        "temperature",
        error={"code": "invalid_value", "param": "temperature"},
    ),
    Case("openai", 429, 429, "rate_limit_exceeded", openai.RateLimitError, retry_after="7"),
    Case("openai", 429, 429, "rate_limit_exceeded", openai.RateLimitError),
    Case("openai", 500, 502, "upstream_error", openai.InternalServerError),
    Case("openai", 502, 502, "upstream_error", openai.InternalServerError),
    Case("openai", 503, 503, "providers_unavailable", openai.InternalServerError),
    Case("openai", 503, 503, "providers_unavailable", openai.InternalServerError, retry_after="7"),
    Case("openai", 504, 504, "upstream_timeout", openai.InternalServerError),
    Case(
        "anthropic",
        400,
        400,
        "context_length_exceeded",
        openai.BadRequestError,
        "messages",
        "invalid_request_error",
        error=ANTHROPIC_TOO_LONG,
    ),
    Case("anthropic", 400, 400, None, openai.BadRequestError, type="invalid_request_error"),
    Case("anthropic", 401, 502, "upstream_credentials_refused", openai.InternalServerError),
    Case("anthropic", 403, 502, "upstream_credentials_refused", openai.InternalServerError),
    Case("anthropic", 404, 404, None, openai.NotFoundError),
    Case("anthropic", 413, 413, "request_too_large", openai.APIStatusError),
    Case("anthropic", 429, 429, "rate_limit_exceeded", openai.RateLimitError, retry_after="7"),
    Case("anthropic", 500, 502, "upstream_error", openai.InternalServerError),
    Case("anthropic", 503, 503, "providers_unavailable", openai.InternalServerError),
    Case("anthropic", 529, 503, "model_overloaded", openai.InternalServerError),
    Case("anthropic", 529, 503, "model_overloaded", openai.InternalServerError, retry_after="7"),
]


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    claude = provider("claude", upstream.url, kind="anthropic", max_retries=0)
    config = fake_upstream_config(
        upstream.url,
        providers=[provider("fake", upstream.base_url, max_retries=0), claude],
        models=[
            {
                "name": name,
                "targets": [
                    {
                        "provider": "fake" if case.kind == "openai" else "claude",
                        "upstream_model": name,
                    }
                ],
            }
            for case in CASES
            for name in (case.model, case.model + "-sdk")  # one each: a cooling stays its own
        ],
    )
    with GatewayProcess(tmp_path_factory.mktemp("upstream-errors"), config) as g:
        yield g


def scripted(upstream: UpstreamProcess, case: Case, times: int = 1) -> None:
    item: dict[str, Any] = {"status": case.status}
    if case.retry_after:
        item["retry_after"] = case.retry_after
    if case.error:
        item["error"] = case.error
    upstream.reset()
    upstream.script(*[item] * times)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model)
def test_an_upstream_status_keeps_its_meaning(
    gw: GatewayProcess, upstream: UpstreamProcess, case: Case
) -> None:
    scripted(upstream, case)
    body = {"model": case.model, "messages": [{"role": "user", "content": "hi"}]}
    raw = http(gw.url + "/v1/chat/completions", body)
    err = assert_error(raw, case.expect, code=case.code, request_id=True)
    if case.type is not None:
        assert err["type"] == case.type
    if case.expect < 500 or case.param is not None:
        assert err["param"] == case.param
    assert err["message"].startswith(f"provider {'fake' if case.kind == 'openai' else 'claude'}")
    assert raw.headers.get("retry-after") == case.retry_after
    if case.error.get("message") and case.expect < 500:  # a rejection says what the upstream said
        assert case.error["message"][:40] in err["message"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model)
def test_the_sdk_raises_the_class_of_the_upstreams_status(
    gw: GatewayProcess, upstream: UpstreamProcess, case: Case
) -> None:
    scripted(upstream, case)
    client = OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0, timeout=10)
    try:
        with pytest.raises(case.sdk_error) as info:
            client.chat.completions.create(
                model=case.model + "-sdk", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        client.close()
    assert info.value.status_code == case.expect
    assert info.value.code == case.code
    assert info.value.param == case.param


def test_a_rejection_is_neither_retried_nor_sent_to_the_next_target(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The request's own fault would be the same anywhere; a 404 (this upstream does not know the
    model) is not the request's, so the next target serves it."""
    config = fake_upstream_config(
        upstream.url,
        providers=[provider("first", upstream.base_url), provider("second", upstream.base_url)],
        models=[
            {"name": "pair", "targets": [{"provider": "first"}, {"provider": "second"}]},
        ],
    )
    with GatewayProcess(tmp_path_factory.mktemp("rejections"), config) as g:
        upstream.reset()
        upstream.script({"status": 422, "error": {"code": "invalid_value", "param": "top_p"}})
        raw = http(
            g.url + "/v1/chat/completions",
            {"model": "pair", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert_error(raw, 422, code="invalid_value", param="top_p")
        assert upstream.stats()["requests"] == 1
        upstream.reset()
        upstream.script({"status": 404, "error": {"code": "model_not_found"}}, {})
        raw = http(
            g.url + "/v1/chat/completions",
            {"model": "pair", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert raw.status == 200 and raw.headers["x-passerelle-target"].startswith("second")
        assert upstream.stats()["requests"] == 2
