"""An Anthropic upstream behind the gateway, used through the openai SDK.

The fake upstream serves the Messages API at ``/v1/messages``; its ``#usage:P,C,K`` directive
reports ``input_tokens=P`` (uncached, Anthropic's meaning), ``output_tokens=C`` and
``cache_read_input_tokens=K``. The gateway normalises that the OpenAI way: prompt tokens
``P + K`` of which ``K`` cached, and meters exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

MODEL = "claude-test"
REPLY = "Hello from fake upstream."


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(
        upstream.url,
        providers=[
            {
                "name": "claude",
                "kind": "anthropic",
                "base_url": upstream.url,
                "api_key": "env:FAKE_UPSTREAM_KEY",
                "max_retries": 2,
                "retry_backoff_s": 0.01,
                "breaker_failures": 1000,
                "timeout_s": 10,
            }
        ],
        models=[
            {
                "name": MODEL,
                "targets": [
                    {
                        "provider": "claude",
                        "upstream_model": "claude-haiku-test",
                        "price": {"input": 3, "output": 15, "cached_input": 0.3},
                    }
                ],
            }
        ],
    )
    with GatewayProcess(tmp_path_factory.mktemp("anthropic"), config) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess, sdk: Sdk) -> OpenAI:
    return sdk(gw)


def ledger_row(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    """The call's row (failed attempts before it are rows of their own, left out here)."""
    rows = gw.ledger_rows("request_id = ? AND status <> 'attempt_failed'", (request_id,))
    assert len(rows) == 1
    return rows[0]


def ask(text: str) -> list[Any]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def test_plain_answer_is_translated_and_metered(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=ask("hi #usage:1000,500,200"), max_tokens=512
    )
    answer = raw.parse()
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == REPLY
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1200, 500)
    assert answer.usage.prompt_tokens_details.cached_tokens == 200  # type: ignore[union-attr]
    # 1000 uncached × 3 + 200 cached × 0.3 + 500 × 15, per million
    assert Decimal(raw.headers["x-passerelle-cost-usd"]) == Decimal("0.01056")
    assert raw.headers["x-passerelle-target"] == "claude/claude-haiku-test"

    row = ledger_row(gw, raw.headers["x-request-id"])
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (1200, 500, 200)
    assert (row["provider"], row["status"], row["usage_reported"]) == ("claude", "ok", 1)

    stats = fresh_upstream.stats()
    assert stats["by_path"] == {"/v1/messages": 1}
    sent = stats["last_request"]
    assert sent["model"] == "claude-haiku-test" and sent["max_tokens"] == 512
    assert sent["system"] == "Be brief."
    assert stats["last_headers"]["x-api-key"] == "sk-upstream-secret"
    assert "anthropic-version" in stats["last_headers"]
    assert "authorization" not in stats["last_headers"]


def test_streamed_answer_is_translated_and_metered(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=ask("hi #usage:300,6,100"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (400, 6)
    assert usage.prompt_tokens_details.cached_tokens == 100  # type: ignore[union-attr]

    row = ledger_row(gw, raw.headers["x-request-id"])
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (400, 6, 100)
    assert (row["status"], row["stream"], row["usage_reported"]) == ("ok", 1, 1)
    assert fresh_upstream.stats()["last_request"]["stream"] is True


def test_stream_without_include_usage_hides_usage_but_meters_it(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=ask("hi #usage:300,6,0"), stream=True
    )
    chunks = list(raw.parse())
    assert all(c.choices for c in chunks)
    row = ledger_row(gw, raw.headers["x-request-id"])
    assert (row["input_tokens"], row["output_tokens"]) == (300, 6)


def test_overloaded_529_is_retried(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 529}, {"status": 529}, {})
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=ask("hi"))
    assert raw.parse().choices[0].message.content == REPLY
    assert fresh_upstream.stats()["requests"] == 3
    assert ledger_row(gw, raw.headers["x-request-id"])["attempt"] == 3
    failed = gw.ledger_rows("request_id = ? AND attempt < 3", (raw.headers["x-request-id"],))
    assert [r["error_code"] for r in failed] == ["upstream_http_529"] * 2


def test_streamed_529_is_retried_before_the_first_byte(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    fresh_upstream.script({"status": 529}, {})
    chunks = list(client.chat.completions.create(model=MODEL, messages=ask("hi"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert fresh_upstream.stats()["requests"] == 2


def test_overloaded_529_after_retries_is_503_model_overloaded(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=ask("hi #status:529"))
    assert info.value.status_code == 503
    assert info.value.code == "model_overloaded"
    assert fresh_upstream.stats()["requests"] == 3


def test_rate_limited_after_retries_is_429(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=ask("hi #status:429"))
    assert fresh_upstream.stats()["requests"] == 3


def test_client_error_is_passed_through_without_retry(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ask("hi #status:400"))
    assert info.value.type == "invalid_request_error" and info.value.code is None
    assert fresh_upstream.stats()["requests"] == 1


def test_stream_cut_mid_way_is_metered_as_an_estimate(gw, fresh_upstream, client) -> None:  # type: ignore[no-untyped-def]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=ask("hi #cut:4 #usage:300,6,0"), stream=True
    )
    seen = []
    with pytest.raises(openai.APIError):
        for chunk in raw.parse():
            seen.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(seen) == "Hello from"  # message_start, block start, two deltas
    row = ledger_row(gw, raw.headers["x-request-id"])
    assert (row["status"], row["usage_reported"]) == ("upstream_cut", 0)
    assert row["output_tokens"] > 0
    assert fresh_upstream.stats()["requests"] == 1
