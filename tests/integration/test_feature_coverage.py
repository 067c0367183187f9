"""No feature dropped without a word, through a real gateway and the openai SDK.

Behind the gateway, the fake upstream is three providers: ``fake`` (OpenAI, every capability),
``lean`` (the same server, configured as one without ``n``, ``logprobs`` or JSON answers) and
``claude`` (Anthropic's Messages API). What each request asks for is either served or refused
with a 400 naming the feature and the model, never answered without it:

- ``n: 3`` to ``lean`` or ``claude`` is made as three calls (the upstream sees three requests
  with ``n: 1``): three choices come back, plain and streamed, and the ledger row meters all
  three calls' tokens;
- ``logprobs`` on a model only ``lean`` serves is a 400 with ``param`` ``logprobs``; on a model
  routed to ``lean`` then ``fake`` it is served by ``fake``, with the log probabilities;
- a JSON schema on ``lean`` alone is a 400 naming ``json_schema``; on ``claude`` it becomes a
  forced call of an answer tool, and the client gets the JSON as content (the SDK's ``parse``
  fills its model), streamed too;
- ``tool_choice: "required"`` reaches Anthropic as ``{"type": "any"}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai import BadRequestError, InternalServerError, OpenAI
from pydantic import BaseModel

from tests.fakes.gateway import GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess

HI = [{"role": "user", "content": "hi #usage:10,4,0"}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}},
    "required": ["city", "rank"],
    "additionalProperties": False,
}
JSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}
LACKING = {"n": False, "logprobs": False, "json_schema": False}


def target(provider: str, model: str) -> dict[str, Any]:
    return {"provider": provider, "upstream_model": model, "price": {"input": 1, "output": 2}}


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    config = fake_upstream_config(upstream.url)
    fake = config["providers"][0]
    config["providers"] += [
        {**fake, "name": "lean", "capabilities": LACKING},
        {
            "name": "claude",
            "kind": "anthropic",
            "base_url": upstream.url,
            "api_key": "env:FAKE_UPSTREAM_KEY",
            "max_retries": 0,
            "timeout_s": 10,
        },
    ]
    config["models"] += [
        {"name": "lean-only", "targets": [target("lean", "lean-1")]},
        {"name": "lean-then-fake", "targets": [target("lean", "lean-2"), target("fake", "full-2")]},
        {"name": "claude-test", "targets": [target("claude", "claude-haiku")]},
    ]
    with GatewayProcess(tmp_path_factory.mktemp("features"), config) as g:
        yield g


@pytest.fixture
def client(gw: GatewayProcess, sdk: Sdk) -> OpenAI:
    return sdk(gw)


def row(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    rows = gw.ledger_rows("request_id = ? AND status <> 'attempt_failed'", (request_id,))
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("model", ["lean-only", "claude-test"])
def test_n_choices_from_a_provider_with_one_per_call_are_n_metered_calls(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: OpenAI, model: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HI, n=3)
    answer = raw.parse()
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert all(c.message.content for c in answer.choices)
    stats = fresh_upstream.stats()
    assert stats["requests"] == 3
    assert stats["last_request"].get("n") in (None, 1)  # Anthropic's body has no n at all
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    ledger = row(gw, raw.headers["x-request-id"])
    assert (ledger["input_tokens"], ledger["output_tokens"]) == (
        answer.usage.prompt_tokens,
        12,
    )
    assert ledger["status"] == "ok"


def billed(gw: GatewayProcess, request_id: str) -> tuple[int, int, bool]:
    """The input and output tokens of every row of a request, and whether each billed row has
    a cost."""
    rows = [r for r in gw.ledger_rows("request_id = ?", (request_id,)) if r["output_tokens"]]
    return (
        sum(r["input_tokens"] for r in rows),
        sum(r["output_tokens"] for r in rows),
        all(r["cost_pusd"] is not None and r["cost_pusd"] > 0 for r in rows),
    )


def test_n_calls_that_fail_part_way_still_meter_the_calls_that_answered(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    # two of the three calls answer (the provider bills them), the slower third fails
    fresh_upstream.script({}, {}, {"status": 500, "latency_ms": 300})
    with pytest.raises(InternalServerError) as failed:
        client.with_options(max_retries=0).chat.completions.create(
            model="claude-test", messages=HI, n=3
        )
    assert fresh_upstream.stats()["requests"] == 3
    assert billed(gw, failed.value.response.headers["x-request-id"]) == (20, 8, True)


def test_n_calls_that_fail_part_way_before_a_fallback_are_billed_on_their_attempt_row(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    # lean's first attempt: two answers and a failure; its two retries fail; fake answers
    fresh_upstream.script({}, {}, {"status": 500, "latency_ms": 300}, *[{"status": 500}] * 6)
    raw = client.chat.completions.with_raw_response.create(model="lean-then-fake", messages=HI, n=3)
    assert raw.headers["x-passerelle-target"] == "fake/full-2"
    # fake gives n itself: one call, billed what the directive says (10 in, 4 out)
    assert billed(gw, raw.headers["x-request-id"]) == (20 + 10, 8 + 4, True)


def test_n_streamed_choices_come_back_each_under_its_index(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    texts: dict[int, str] = {}
    usage = None
    with client.chat.completions.create(
        model="lean-only", messages=HI, n=2, stream=True, stream_options={"include_usage": True}
    ) as stream:
        for chunk in stream:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            usage = chunk.usage or usage
    assert sorted(texts) == [0, 1] and texts[0] and texts[0] == texts[1]
    assert usage is not None and usage.completion_tokens == 8
    assert fresh_upstream.stats()["requests"] == 2


def test_logprobs_no_target_gives_are_a_400_naming_them_and_the_model(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model="lean-only", messages=HI, logprobs=True)
    err = refused.value
    assert (err.code, err.param) == ("no_eligible_target", "logprobs")
    assert "model 'lean-only'" in err.message and "capability 'logprobs'" in err.message
    assert fresh_upstream.stats()["requests"] == 0


def test_logprobs_are_served_by_the_target_that_gives_them(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="lean-then-fake", messages=HI, logprobs=True, top_logprobs=2
    )
    assert raw.headers["x-passerelle-target"] == "fake/full-2"
    choice = raw.parse().choices[0]
    assert choice.logprobs is not None and choice.logprobs.content


def test_a_json_schema_no_target_can_honour_is_a_400(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model="lean-only",
            messages=HI,
            response_format=JSON_FORMAT,  # type: ignore[arg-type]
        )
    assert refused.value.param == "response_format"
    assert "capability 'json_schema'" in refused.value.message
    assert fresh_upstream.stats()["requests"] == 0


class Place(BaseModel):
    city: str
    rank: int


def test_a_json_schema_on_anthropic_is_answered_as_json(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    answer = client.chat.completions.parse(model="claude-test", messages=HI, response_format=Place)
    choice = answer.choices[0]
    assert choice.message.parsed == Place(city="", rank=0)  # the fake's smallest instance
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    sent = fresh_upstream.stats()["last_request"]
    assert sent["tool_choice"] == {"type": "tool", "name": "json_answer"}
    assert sent["tools"][-1]["input_schema"]["required"] == ["city", "rank"]


def test_a_streamed_json_schema_on_anthropic_streams_the_json(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    stream = client.chat.completions.create(
        model="claude-test",
        messages=HI,
        response_format=JSON_FORMAT,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"city": "", "rank": 0}
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)


def test_tool_choice_required_reaches_anthropic_as_any(
    fresh_upstream: UpstreamProcess, client: OpenAI
) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    client.chat.completions.create(
        model="claude-test",
        messages=HI,
        tools=[tool],  # type: ignore[list-item]
        tool_choice="required",
    )
    assert fresh_upstream.stats()["last_request"]["tool_choice"] == {"type": "any"}
