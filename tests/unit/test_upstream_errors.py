"""Each wire format's error body becomes the ``ProviderError`` of its kind, with what it said."""

from __future__ import annotations

import orjson
import pytest

from passerelle.errors import (
    ProviderBackPressureError,
    ProviderCredentialError,
    ProviderError,
    ProviderFailedError,
    ProviderNotFoundError,
    ProviderOverloadedError,
    ProviderRejectedError,
    UpstreamRejectedError,
)
from passerelle.providers.upstream_errors import (
    anthropic_error,
    from_status,
    openai_error,
    retry_after_s,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ProviderRejectedError),
        (401, ProviderCredentialError),
        (402, ProviderCredentialError),
        (403, ProviderCredentialError),
        (404, ProviderNotFoundError),
        (408, ProviderFailedError),
        (409, ProviderFailedError),
        (413, ProviderRejectedError),
        (418, ProviderRejectedError),
        (422, ProviderRejectedError),
        (429, ProviderBackPressureError),
        (500, ProviderFailedError),
        (503, ProviderFailedError),
        (529, ProviderOverloadedError),
    ],
)
def test_the_status_decides_the_kind(status: int, kind: type[ProviderError]) -> None:
    assert type(from_status("p", status)) is kind


def test_a_503_with_a_retry_after_is_back_pressure_and_keeps_it() -> None:
    exc = from_status("p", 503, retry_after="7")
    assert isinstance(exc, ProviderBackPressureError) and exc.retry_after == "7"
    assert exc.to_api_error().headers == {"retry-after": "7"}
    assert isinstance(from_status("p", 503, retry_after="soon"), ProviderFailedError)


def test_a_retry_after_given_as_a_date_is_read_as_the_seconds_until_it() -> None:
    assert retry_after_s("Wed, 02 Dec 2026 10:00:30 GMT", now=1796205600.0) == "30"
    assert retry_after_s("Wed, 02 Dec 2026 09:00:00 GMT", now=1796205600.0) == "0"
    assert retry_after_s("12") == "12" and retry_after_s("later") is None


def test_an_openai_rejection_keeps_status_type_code_and_param() -> None:
    raw = orjson.dumps(
        {"error": {"message": "too long", "type": "invalid_request_error", "param": "messages",
                   "code": "context_length_exceeded"}}
    )  # fmt: skip
    api = openai_error("oai", 400, raw).to_api_error()
    assert isinstance(api, UpstreamRejectedError)
    assert (api.status, api.type, api.code, api.param) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert api.message == "provider oai: too long"


def test_vllms_flat_error_body_is_read_too() -> None:
    raw = b'{"object": "error", "message": "bad top_p", "type": "BadRequestError", "code": 400}'
    exc = openai_error("vllm", 400, raw)
    assert isinstance(exc, ProviderRejectedError)
    assert exc.message == "bad top_p" and exc.code is None and exc.type == "invalid_request_error"


def test_anthropics_too_long_prompt_is_context_length_exceeded() -> None:
    raw = b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}'
    api = anthropic_error("claude", 400, raw).to_api_error()
    assert (api.status, api.code, api.param) == (400, "context_length_exceeded", "messages")


def test_an_error_body_that_is_not_json_gives_the_status_only() -> None:
    exc = openai_error("oai", 502, b"<html>bad gateway</html>")
    assert isinstance(exc, ProviderFailedError) and exc.message == "HTTP 502"
    assert exc.to_api_error().status == 502
