"""A JSON response format on Anthropic, as a forced tool call (``anthropic_structured.py``).

The request gets the answer tool with the requested schema and a ``tool_choice`` that makes the
model call it (``any`` next to the request's own tools); the answer's call of that tool comes back
as the message's JSON text with finish reason ``stop``, plain and streamed, while a call of one
of the request's own tools stays a tool call.
"""

from __future__ import annotations

from typing import Any

import orjson

from passerelle.providers.anthropic_structured import ANSWER_TOOL, AnswerEvents, apply, unwrap
from passerelle.providers.anthropic_wire import (
    AnthropicStreamTranslator,
    from_anthropic_message,
    to_anthropic_body,
)
from passerelle.providers.base import UpstreamRequest

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
FORMAT = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def anthropic_body(**fields: Any) -> dict[str, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": "where?"}], **fields}
    out = to_anthropic_body(UpstreamRequest(body=body, upstream_model="claude", stream=False))
    apply(out, body.get("response_format"))
    return out


def test_a_schema_becomes_a_forced_call_of_the_answer_tool() -> None:
    out = anthropic_body(response_format=FORMAT)
    assert out["tools"] == [
        {"name": ANSWER_TOOL, "description": out["tools"][0]["description"], "input_schema": SCHEMA}
    ]
    assert out["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}


def test_json_object_asks_for_any_object() -> None:
    out = anthropic_body(response_format={"type": "json_object"})
    assert out["tools"][0]["input_schema"] == {"type": "object"}


def test_the_requests_own_tools_stay_callable() -> None:
    out = anthropic_body(response_format=FORMAT, tools=[TOOL], parallel_tool_calls=False)
    assert [t["name"] for t in out["tools"]] == ["weather", ANSWER_TOOL]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_a_request_forcing_its_own_tool_is_left_alone() -> None:
    forced = {"type": "function", "function": {"name": "weather"}}
    out = anthropic_body(response_format=FORMAT, tools=[TOOL], tool_choice=forced)
    assert [t["name"] for t in out["tools"]] == ["weather"]


def test_text_asks_for_nothing() -> None:
    assert "tools" not in anthropic_body(response_format={"type": "text"})


def message(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "content": list(blocks), "stop_reason": "tool_use", "usage": {}}


def test_the_answer_tools_call_is_the_messages_json_text() -> None:
    doc = message({"type": "tool_use", "id": "t1", "name": ANSWER_TOOL, "input": {"city": "Lyon"}})
    choice = from_anthropic_message(unwrap(doc), "m")["choices"][0]
    assert orjson.loads(choice["message"]["content"]) == {"city": "Lyon"}
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"


def test_a_call_of_the_requests_own_tool_stays_a_tool_call() -> None:
    doc = message({"type": "tool_use", "id": "t1", "name": "weather", "input": {}})
    choice = from_anthropic_message(unwrap(doc), "m")["choices"][0]
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "weather"
    assert choice["finish_reason"] == "tool_calls"


def test_a_streamed_answer_tool_call_is_streamed_text() -> None:
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 5}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t1", "name": ANSWER_TOOL, "input": {}},
        },
        *(
            {"type": "content_block_delta", "index": 0, "delta": d}
            for d in (
                {"type": "input_json_delta", "partial_json": '{"city": '},
                {"type": "input_json_delta", "partial_json": '"Lyon"}'},
            )
        ),
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}},
        {"type": "message_stop"},
    ]
    answer, translator = (
        AnswerEvents(),
        AnthropicStreamTranslator(provider="c", model="m", include_usage=False),
    )
    chunks = [c for e in events for c in translator.feed(*answer.feed(e["type"], e))]
    choices = [orjson.loads(c.data)["choices"] for c in chunks if c.forward]
    text = "".join(c[0]["delta"].get("content") or "" for c in choices if c)
    assert orjson.loads(text) == {"city": "Lyon"}
    assert not any("tool_calls" in c[0]["delta"] for c in choices if c)
    assert [c[0]["finish_reason"] for c in choices if c][-1] == "stop"
