"""The Responses API edge, driven as pure functions: requests to chat bodies, chat answers and
chat stream chunks to Responses objects and events, each checked against the openai SDK's own
types (validated, not just constructed) and, for streams, replayed through the SDK's stream
state machine, which is what ``client.responses.stream`` relies on."""

from __future__ import annotations

from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from passerelle.errors import InvalidRequestError
from passerelle.protocol.responses_answer import (
    ResponseIds,
    assistant_message,
    from_chat_completion,
)
from passerelle.protocol.responses_request import input_messages, to_chat
from passerelle.protocol.responses_stream import ResponsesStream

IDS = ResponseIds.new("0123abcd", created_at=1_700_000_000)
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def chat_answer(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE_CHUNK = {
    "id": "chatcmpl-2",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}


def replay(events: list[dict[str, Any]], tools: list[Any] | None = None) -> Any:
    """Every event validated as the SDK's type, then fed to its stream state: its final
    response (what ``get_final_response`` returns)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools or [], text_format=omit)
    for n, event in enumerate(events):
        assert event["sequence_number"] == n
        state.handle_event(EVENTS.validate_python(event))
    return state._completed_response


# -- request -------------------------------------------------------------------------------------


def test_a_string_input_and_instructions_become_system_and_user_messages() -> None:
    chat = to_chat(
        {
            "model": "gpt-4o-mini",
            "instructions": "Be brief.",
            "input": "Hello",
            "max_output_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u-1",
        }
    )
    assert chat == {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ],
        "max_completion_tokens": 50,
    }


def test_message_items_keep_their_roles_and_parts() -> None:
    messages = input_messages(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA=="},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "A cat."}],
                },
                {"role": "developer", "content": "Answer in French."},
            ]
        }
    )
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            ],
        },
        {"role": "assistant", "content": "A cat."},
        {"role": "developer", "content": "Answer in French."},
    ]


def test_function_call_items_and_outputs_become_tool_calls_and_tool_messages() -> None:
    chat = to_chat(
        {
            "model": "m",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "input": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {
                    "type": "function_call",
                    "call_id": "c2",
                    "name": "get_weather",
                    "arguments": '{"city":"Rome"}',
                },
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
            ],
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    _user, assistant, out1, out2 = chat["messages"]
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert assistant["content"] is None
    assert out1 == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert out2 == {"role": "tool", "tool_call_id": "c2", "content": "rain"}


def test_text_format_json_schema_becomes_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    chat = to_chat(
        {
            "model": "m",
            "input": "x",
            "text": {
                "format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
            },
        }
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert "response_format" not in to_chat(
        {"model": "m", "input": "x", "text": {"format": {"type": "text"}}}
    )


def test_a_stream_asks_for_the_usage_chunk_and_metadata_keeps_only_the_feature_upstream() -> None:
    chat = to_chat(
        {"model": "m", "input": "x", "stream": True, "metadata": {"feature": "search", "k": "v"}}
    )
    assert chat["stream_options"] == {"include_usage": True}
    assert chat["metadata"] == {"feature": "search"}
    assert "metadata" not in to_chat({"model": "m", "input": "x", "metadata": {"k": "v"}})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {
                "model": "m",
                "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
            },
            "input[0].content[0].type",
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}}, "tool_choice"),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
            "text.format.schema",
        ),
        ({"model": "m", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": "x", "instructions": ["x"]}, "instructions"),
    ],
)
def test_what_a_chat_upstream_cannot_do_is_refused_naming_the_field(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        to_chat(body)
    assert refused.value.param == param
    assert refused.value.status == 400


# -- answer --------------------------------------------------------------------------------------


def test_a_chat_answer_becomes_a_response_the_sdk_validates() -> None:
    request = {
        "model": "gpt-4o-mini",
        "input": "hi",
        "instructions": "Be brief.",
        "metadata": {"k": "v"},
    }
    obj = from_chat_completion(
        IDS, chat_answer({"role": "assistant", "content": "Hello there."}), request
    )
    response = Response.model_validate(obj)
    assert response.id == "resp_0123abcd"
    assert response.output_text == "Hello there."
    assert response.status == "completed"
    assert response.instructions == "Be brief."
    assert response.metadata == {"k": "v"}
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 5)
    assert response.usage.total_tokens == 17
    assert response.usage.input_tokens_details.cached_tokens == 4


def test_tool_calls_become_function_call_items_after_the_text() -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    response = Response.model_validate(
        from_chat_completion(
            IDS, chat_answer(message, "tool_calls"), {"model": "m", "tools": [WEATHER]}
        )
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["message", "function_call"]
    call = response.output[1]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == (
        "call_9",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert response.tools[0].type == "function"


def test_an_answer_cut_by_the_output_limit_is_incomplete() -> None:
    obj = from_chat_completion(
        IDS, chat_answer({"role": "assistant", "content": "a b"}, "length"), {}
    )
    response = Response.model_validate(obj)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_the_next_turn_inherits_the_assistant_message_with_its_tool_calls() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert assistant_message(
        chat_answer({"role": "assistant", "content": None, "tool_calls": calls})
    ) == {
        "role": "assistant",
        "content": None,
        "tool_calls": calls,
    }


# -- stream --------------------------------------------------------------------------------------


def test_a_text_stream_tells_the_whole_story_in_order() -> None:
    stream = ResponsesStream(IDS, {"model": "gpt-4o-mini", "input": "hi"})
    events = stream.feed(chunk({"role": "assistant", "content": ""}))
    for piece in ["Hello", " there", "."]:
        events += stream.feed(chunk({"content": piece}))
    events += stream.feed(chunk({}, "stop"))
    events += stream.feed(USAGE_CHUNK)
    events += stream.end()
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = replay(events)
    assert final.id == "resp_0123abcd"
    assert final.output_text == "Hello there."
    assert final.usage.output_tokens == 3
    assert stream.end() == []  # closing twice adds nothing


def test_streamed_tool_calls_hold_arguments_until_id_and_name_arrive() -> None:
    stream = ResponsesStream(IDS, {"model": "m", "tools": [WEATHER]})
    events = stream.feed(chunk({"role": "assistant", "content": None}))
    # arguments first, as some servers send them, then id and name
    events += stream.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}))
    assert [e["type"] for e in events] == ["response.created", "response.in_progress"]
    events += stream.feed(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather"},
                    }
                ]
            }
        )
    )
    events += stream.feed(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]})
    )
    events += stream.feed(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_2",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ]
            }
        )
    )
    events += stream.feed(chunk({}, "tool_calls"))
    events += stream.end()
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"ci', 'ty":"Paris"}', "{}"]
    final = replay(events, tools=[WEATHER])
    assert [(o.call_id, o.arguments) for o in final.output] == [
        ("call_1", '{"city":"Paris"}'),
        ("call_2", "{}"),
    ]
    completion = stream.chunks.completion()
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["id"] for c in completion["choices"][0]["message"]["tool_calls"]] == [
        "call_1",
        "call_2",
    ]


def test_text_then_a_tool_call_closes_the_message_before_the_call_is_announced() -> None:
    stream = ResponsesStream(IDS, {"model": "m"})
    events = stream.feed(chunk({"role": "assistant", "content": "Let me check."}))
    events += stream.feed(
        chunk(
            {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}
        )
    )
    events += stream.end()
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    final = replay(events)
    assert [o.type for o in final.output] == ["message", "function_call"]
    assert final.output_text == "Let me check."


def test_a_stream_stopped_by_the_output_limit_ends_incomplete() -> None:
    stream = ResponsesStream(IDS, {"model": "m", "max_output_tokens": 1})
    events = stream.feed(chunk({"content": "a"}, "length")) + stream.end()
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    for event in events:
        EVENTS.validate_python(event)


def test_a_broken_stream_ends_with_an_error_and_a_failed_response() -> None:
    stream = ResponsesStream(IDS, {"model": "m"})
    events = stream.feed(chunk({"content": "partial"}))
    events += stream.failed(
        {"code": "upstream_error", "message": "provider fake failed", "param": None}, 502
    )
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    for event in events:
        EVENTS.validate_python(event)
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert stream.end() == []


def test_a_failure_after_the_stream_completed_is_the_error_alone() -> None:
    stream = ResponsesStream(IDS, {"model": "m"})
    events = stream.feed(chunk({"content": "done"}, "stop")) + stream.end()
    after = stream.failed(
        {"code": "ledger_unavailable", "message": "not recorded", "param": None}, 503
    )
    assert [e["type"] for e in after] == ["error"]
    assert after[0]["sequence_number"] == len(events)
