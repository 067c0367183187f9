"""Legacy text completions (``POST /v1/completions``) through a real gateway, with the openai SDK.

Passed through to an OpenAI-compatible upstream as sent (``echo``, ``suffix``, ``logprobs`` and
the rest), metered under endpoint ``completions`` and held to budgets like chat; a target that
cannot serve the endpoint (an ``anthropic`` provider) is routed past, and a model with no other
is refused with 400 ``no_eligible_target``. ``GET /v1/models/{id}`` is here too: it is the other
half of what older clients call first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config, openai_provider
from tests.fakes.upstream import UpstreamProcess

REPLY = "Hello from fake upstream."
PRICE = {"input": 1, "output": 2}


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    claude = {**openai_provider("claude", upstream.url), "kind": "anthropic", "max_retries": 0}
    config = fake_upstream_config(
        upstream.url,
        providers=[openai_provider("fake", upstream.base_url), claude],
        models=[
            {"name": "text-model", "targets": [{"provider": "fake", "price": PRICE}]},
            {
                "name": "claude-first",
                "targets": [
                    {"provider": "claude", "upstream_model": "claude-x", "price": PRICE},
                    {"provider": "fake", "upstream_model": "fallback-text", "price": PRICE},
                ],
            },
            {"name": "claude-only", "targets": [{"provider": "claude", "price": PRICE}]},
            {"name": "dear-text", "targets": [{"provider": "fake", "price": PRICE}]},
        ],
    )
    config["tenants"].append(
        {
            "name": "thrifty",
            "keys": ["env:THRIFTY_KEY"],
            "budgets": [{"usd": 0.0001, "period": "month"}],
        }
    )
    with GatewayProcess(
        tmp_path_factory.mktemp("completions"), config, env={"THRIFTY_KEY": "sk-test-thrifty"}
    ) as g:
        yield g


def row_of(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    [row] = gw.ledger_rows("request_id = ? AND status <> 'attempt_failed'", (request_id,))
    return row


def test_a_completion_is_passed_through_and_metered_as_completions(
    gw: GatewayProcess, sdk: Sdk, fresh_upstream: UpstreamProcess
) -> None:
    raw = sdk(gw).completions.with_raw_response.create(
        model="text-model",
        prompt="Say hi #usage:1000,500,0",
        max_tokens=700,
        echo=True,
        suffix="!",
        logprobs=2,
    )
    answer = raw.parse()
    assert answer.object == "text_completion"
    assert answer.choices[0].text.endswith(REPLY)
    assert answer.choices[0].logprobs is not None and answer.choices[0].logprobs.tokens
    sent = fresh_upstream.stats()["last_request"]
    assert fresh_upstream.stats()["by_path"] == {"/v1/completions": 1}
    assert (sent["echo"], sent["suffix"], sent["logprobs"], sent["max_tokens"]) == (
        True,
        "!",
        2,
        700,
    )
    assert sent["model"] == "text-model" and "messages" not in sent
    row = row_of(gw, raw.headers["x-request-id"])
    assert (row["endpoint"], row["input_tokens"], row["output_tokens"]) == (
        "completions",
        1000,
        500,
    )
    # 1000 × $1 + 500 × $2 per million
    assert Decimal(raw.headers["x-passerelle-cost-usd"]) == Decimal("0.002")


def test_a_batch_of_prompts_gets_a_choice_each(
    gw: GatewayProcess, sdk: Sdk, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    answer = sdk(gw).completions.create(model="text-model", prompt=["one", "two", "three"], n=2)
    assert [c.index for c in answer.choices] == list(range(6))
    assert fresh_upstream.stats()["last_request"]["prompt"] == ["one", "two", "three"]


def test_a_streamed_completion_is_text_completion_chunks_and_done(
    gw: GatewayProcess, sdk: Sdk, fresh_upstream: UpstreamProcess
) -> None:
    with sdk(gw).completions.with_streaming_response.create(
        model="text-model",
        prompt="Once upon a time #usage:7,4,0",
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == REPLY
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    row = row_of(gw, request_id)
    assert (row["endpoint"], row["stream"], row["output_tokens"]) == ("completions", 1, 4)


def test_a_stream_without_include_usage_hides_the_usage_chunk(
    gw: GatewayProcess, sdk: Sdk, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    chunks = list(sdk(gw).completions.create(model="text-model", prompt="hi", stream=True))
    assert chunks and all(c.choices for c in chunks)


def test_a_target_that_cannot_complete_text_is_routed_past(
    gw: GatewayProcess, sdk: Sdk, fresh_upstream: UpstreamProcess
) -> None:
    raw = sdk(gw).completions.with_raw_response.create(model="claude-first", prompt="hi")
    assert raw.headers["x-passerelle-target"] == "fake/fallback-text"
    assert fresh_upstream.stats()["by_path"] == {"/v1/completions": 1}


def test_a_model_with_no_target_for_completions_is_400_no_eligible_target(
    gw: GatewayProcess, sdk: Sdk, fresh_upstream: UpstreamProcess
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gw).completions.create(model="claude-only", prompt="hi")
    assert info.value.code == "no_eligible_target"
    assert "completions" in info.value.message
    assert fresh_upstream.stats()["requests"] == 0


def test_a_batch_is_reserved_for_every_answer_it_may_produce(
    gw: GatewayProcess, sdk: Sdk, fresh_upstream
) -> None:  # type: ignore[no-untyped-def]
    # $0.0001 a month at $2 per million output tokens: 20 tokens of output fit, 10 × 20 do not
    client = sdk(gw, "sk-test-thrifty")
    client.completions.create(model="dear-text", prompt="hi #usage:1,1,0", max_tokens=20)
    with pytest.raises(openai.RateLimitError) as info:
        client.completions.create(model="dear-text", prompt=["hi"] * 10, max_tokens=20)
    assert info.value.status_code == 429
    assert fresh_upstream.stats()["requests"] == 1


def test_a_completion_without_a_prompt_is_400_naming_it(gw: GatewayProcess, sdk: Sdk) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gw).post("/completions", body={"model": "text-model"}, cast_to=object)
    assert info.value.param == "prompt"


def test_one_model_is_retrieved_as_openai_describes_it(gw: GatewayProcess, sdk: Sdk) -> None:
    model = sdk(gw).models.retrieve("claude-first")
    assert (model.id, model.object, model.owned_by) == ("claude-first", "model", "passerelle")


def test_an_unknown_model_is_404_model_not_found(gw: GatewayProcess, sdk: Sdk) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gw).models.retrieve("gpt-9")
    assert info.value.code == "model_not_found"
    assert info.value.response.headers["x-request-id"].startswith("req_")


def test_retrieving_a_model_needs_a_key(gw: GatewayProcess) -> None:
    with (
        OpenAI(base_url=gw.base_url, api_key="sk-bogus", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.retrieve("text-model")
