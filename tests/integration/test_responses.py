"""OpenAI's Responses API through the real gateway, driven by the official openai SDK.

The gateway runs as a process in front of the fake upstream, which speaks chat completions only:
every call here is translated to chat and back. Plain and streamed, instructions, a function tool
round trip, structured output, conversations continued by ``previous_response_id`` (and refused
to another tenant, or after ``store: false``), metering and a hard budget.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from openai import BadRequestError, NotFoundError, OpenAI, RateLimitError
from pydantic import BaseModel

from tests.fakes.gateway import TENANT_KEYS, GatewayProcess, Sdk, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess
from tests.integration.budget_helpers import budget_config

MODEL = "gpt-4o-mini"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 3}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def upstream_messages(upstream: UpstreamProcess) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = upstream.stats()["last_request"]["messages"]
    return messages


def test_a_plain_response_with_instructions(
    gateway: GatewayProcess, client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL,
        instructions="Be brief.",
        input="Say hello #usage:20,5,8",
        max_output_tokens=50,
        temperature=0.3,
        user="end-user-1",
        metadata={"ticket": "42"},
    )
    response = raw.parse()
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Hello from fake upstream."
    assert response.instructions == "Be brief."
    assert response.metadata == {"ticket": "42"}
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (20, 5)
    assert response.usage.total_tokens == 25
    assert response.usage.input_tokens_details.cached_tokens == 8
    sent = fresh_upstream.stats()["last_request"]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello #usage:20,5,8"},
    ]
    assert (sent["temperature"], sent["user"]) == (0.3, "end-user-1")
    assert "metadata" not in sent
    # metered as a Responses call, with its cost
    (row,) = gateway.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    assert row["endpoint"] == "responses"
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (20, 5, 8)
    assert row["cost_pusd"] is not None and row["cost_pusd"] > 0
    assert Decimal(raw.headers["x-passerelle-cost-usd"]) > 0


def test_input_items_with_a_function_tool_round_trip(
    client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    question: Any = [{"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}]
    first = client.responses.create(
        model=MODEL, input=question, tools=[WEATHER], tool_choice="required"
    )
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": ""}
    sent = fresh_upstream.stats()["last_request"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "required"
    # the client runs the tool and sends the whole exchange back, as items
    second = client.responses.create(
        model=MODEL,
        tools=[WEATHER],
        input=[
            *question,
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"},
        ],
    )
    assert second.output_text == "The tool answered: sunny, 21C"
    assert upstream_messages(fresh_upstream)[1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"},
    ]


def test_structured_output_with_a_json_schema(
    client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    response = client.responses.create(
        model=MODEL,
        input="Who is it?",
        text={
            "format": {"type": "json_schema", "name": "person", "schema": SCHEMA, "strict": True}
        },
    )
    assert json.loads(response.output_text) == {"name": "xxx", "age": 0}
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"
    sent = fresh_upstream.stats()["last_request"]
    assert sent["response_format"]["json_schema"]["schema"] == SCHEMA


class Person(BaseModel):
    name: str
    age: int


def test_the_sdk_parses_structured_output_into_its_model(client: OpenAI) -> None:
    parsed = client.responses.parse(model=MODEL, input="Who is it?", text_format=Person)
    assert parsed.output_parsed == Person(name="", age=0)


def test_a_conversation_continued_by_previous_response_id_and_refused_to_another_tenant(
    gateway: GatewayProcess, client: OpenAI, sdk: Sdk, fresh_upstream: UpstreamProcess
) -> None:
    first = client.responses.create(model=MODEL, instructions="Be brief.", input="My name is Ada.")
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, input="What is my name?"
    )
    assert second.previous_response_id == first.id
    # the upstream got the whole conversation; the first turn's instructions are not inherited
    assert upstream_messages(fresh_upstream) == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello from fake upstream."},
        {"role": "user", "content": "What is my name?"},
    ]
    third = client.responses.create(
        model=MODEL, previous_response_id=second.id, instructions="Be kind.", input="Thanks"
    )
    assert [m["role"] for m in upstream_messages(fresh_upstream)] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert client.responses.retrieve(third.id).output_text == third.output_text
    other = sdk(gateway, TENANT_KEYS["globex"])
    requests = fresh_upstream.stats()["requests"]
    with pytest.raises(BadRequestError) as refused:
        other.responses.create(model=MODEL, previous_response_id=second.id, input="Hi")
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert refused.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    with pytest.raises(NotFoundError):
        other.responses.retrieve(second.id)
    assert fresh_upstream.stats()["requests"] == requests  # nothing was sent upstream


def test_a_response_made_with_store_false_cannot_be_continued(
    client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    unkept = client.responses.create(model=MODEL, input="Forget me", store=False)
    assert unkept.store is False
    with pytest.raises(BadRequestError) as refused:
        client.responses.create(model=MODEL, previous_response_id=unkept.id, input="Again")
    assert refused.value.status_code == 400
    assert "not found" in refused.value.message
    with pytest.raises(NotFoundError) as missing:
        client.responses.retrieve(unkept.id)
    assert missing.value.code == "response_not_found"
    assert str(missing.value.request_id).startswith("req_")


def test_a_streamed_response_tells_its_events_and_its_final_response(
    gateway: GatewayProcess, client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    with client.responses.stream(
        model=MODEL, instructions="Be brief.", input="Stream it #usage:11,4,0"
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello from fake upstream." == final.output_text
    assert final.usage is not None and final.usage.input_tokens == 11
    assert fresh_upstream.stats()["last_request"]["stream_options"] == {"include_usage": True}
    rows = gateway.ledger_rows("endpoint = 'responses' AND stream = 1 AND input_tokens = 11")
    assert rows and rows[-1]["output_tokens"] == 4 and rows[-1]["cost_pusd"] > 0
    # a streamed response is kept too
    continued = client.responses.create(
        model=MODEL, previous_response_id=final.id, input="And then?"
    )
    assert continued.status == "completed"
    assert upstream_messages(fresh_upstream)[-2] == {
        "role": "assistant",
        "content": "Hello from fake upstream.",
    }


def test_a_streamed_tool_call_arrives_as_function_call_events(
    client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    with client.responses.stream(
        model=MODEL, input="Weather in Paris?", tools=[WEATHER], tool_choice="required"
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": ""}


def test_an_invalid_request_is_refused_in_the_responses_terms(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as refused:
        client.responses.create(model=MODEL, input="x", tools=[{"type": "web_search"}])
    assert refused.value.body["param"] == "tools[0].type"  # type: ignore[index]
    with pytest.raises(NotFoundError):
        client.responses.create(model="no-such-model", input="x")


def test_an_exhausted_hard_budget_refuses_a_response(
    tmp_path: Any, fresh_upstream: UpstreamProcess
) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    key = "sk-race-" + uuid.uuid4().hex
    config = budget_config(
        fresh_upstream.url, tenant, {"budgets": [{"usd": 0.00001, "period": "day"}]}
    )
    with (
        GatewayProcess(tmp_path / "gw", config, env={"RACE_KEY": key}) as gw,
        OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client,
    ):
        with pytest.raises(RateLimitError) as refused:
            client.responses.create(model=MODEL, input="hi", max_output_tokens=100)
        assert refused.value.status_code == 429
        assert refused.value.body["code"] == "insufficient_quota"  # type: ignore[index]
        with (
            pytest.raises(RateLimitError),
            client.responses.stream(model=MODEL, input="hi", max_output_tokens=100) as s,
        ):
            list(s)
        assert fresh_upstream.stats()["requests"] == 0
        rows = gw.ledger_rows("tenant = ?", (tenant,))
        assert rows and {r["endpoint"] for r in rows} == {"responses"}


def test_a_stream_cut_upstream_ends_with_an_error_event_and_a_failed_response(
    gateway: GatewayProcess, client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="Tell me more #cut:3", stream=True
    )
    events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.output_text.delta" in kinds  # what was said before the cut was sent
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    (row,) = gateway.ledger_rows(
        "request_id = ? AND status <> 'attempt_failed'", (raw.headers["x-request-id"],)
    )
    assert row["endpoint"] == "responses" and row["status"] == "upstream_cut"
    with pytest.raises(BadRequestError):  # a broken response is not kept
        client.responses.create(model=MODEL, previous_response_id=failed.response.id, input="x")


def test_an_upstream_refusal_before_the_stream_starts_is_a_plain_error(
    client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    fresh_upstream.script({"status": 400}, {"status": 400}, {"status": 400})
    with (
        pytest.raises(BadRequestError) as refused,
        client.responses.stream(model=MODEL, input="hi") as stream,
    ):
        list(stream)
    assert refused.value.status_code == 400


@pytest.mark.redis
def test_with_redis_every_replica_continues_a_response_for_its_tenant_only(
    tmp_path: Any, fresh_upstream: UpstreamProcess, redis_url: str
) -> None:
    config = fake_upstream_config(fresh_upstream.url, redis=redis_url)
    with (
        GatewayProcess(tmp_path / "a", config) as one,
        GatewayProcess(tmp_path / "b", config) as two,
        OpenAI(base_url=one.base_url, api_key=TENANT_KEYS["acme"], max_retries=0) as first,
        OpenAI(base_url=two.base_url, api_key=TENANT_KEYS["acme"], max_retries=0) as second,
        OpenAI(base_url=two.base_url, api_key=TENANT_KEYS["globex"], max_retries=0) as other,
    ):
        made = first.responses.create(model=MODEL, input="Remember 7.")
        continued = second.responses.create(
            model=MODEL, previous_response_id=made.id, input="What number?"
        )
        assert continued.status == "completed"
        assert upstream_messages(fresh_upstream)[0] == {"role": "user", "content": "Remember 7."}
        assert second.responses.retrieve(made.id).output_text == made.output_text
        with pytest.raises(BadRequestError):
            other.responses.create(model=MODEL, previous_response_id=made.id, input="x")


def test_an_idempotent_retry_is_replayed_as_a_response_that_can_be_continued(
    gateway: GatewayProcess, client: OpenAI, fresh_upstream: UpstreamProcess
) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.responses.create(model=MODEL, input="Once #usage:7,5,0", extra_headers=key)
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="Once #usage:7,5,0", extra_headers=key
    )
    replay = raw.parse()
    assert fresh_upstream.stats()["requests"] == 1  # served once
    assert replay.output_text == first.output_text
    assert replay.usage is not None and replay.usage.input_tokens == 7
    (row,) = gateway.ledger_rows("request_id = ?", (raw.headers["x-request-id"],))
    assert (row["endpoint"], row["status"]) == ("responses", "replayed")
    for made in (first, replay):
        continued = client.responses.create(model=MODEL, previous_response_id=made.id, input="Next")
        assert continued.status == "completed"
