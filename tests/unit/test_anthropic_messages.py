"""The Messages dialect's pure translations: request to chat, chat answer and stream back, errors
in Anthropic's shape, and the native passthrough's reading of Anthropic's own events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from passerelle.errors import (
    APIError,
    AuthenticationError,
    InsufficientQuotaError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProviderOverloadedError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
)
from passerelle.pipeline.context import Call
from passerelle.pipeline.dialect import DialectAnswer
from passerelle.protocol.anthropic_messages import (
    ANTHROPIC_MESSAGES,
    count_tokens,
    to_chat,
    to_message,
)
from passerelle.protocol.messages_stream import MessagesStream
from passerelle.providers.anthropic_native import NativeStream, native_body
from passerelle.providers.base import StreamChunk, UpstreamRequest

PNG = "iVBORw0KGgo="


def request(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-x",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def test_a_plain_request_becomes_a_chat_body_with_its_limits_and_sampling() -> None:
    chat = to_chat(
        request(
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u-1"},
        )
    )
    assert chat == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END"],
        "user": "u-1",
    }


def test_the_system_prompt_as_a_string_or_as_blocks_is_the_first_message() -> None:
    assert to_chat(request(system="be brief"))["messages"][0] == {
        "role": "system",
        "content": "be brief",
    }
    blocks = [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
    ]
    assert to_chat(request(system=blocks))["messages"][0] == {"role": "system", "content": "a\n\nb"}


def test_a_missing_max_tokens_is_a_400_naming_it_as_anthropic_does() -> None:
    body = request()
    del body["max_tokens"]
    with pytest.raises(InvalidRequestError) as caught:
        to_chat(body)
    assert caught.value.param == "max_tokens"
    assert "Field required" in caught.value.message
    assert to_chat(body | {"max_tokens": 1})["max_tokens"] == 1
    assert count_tokens(body) > 0  # counting needs no limit


def test_a_bad_role_names_the_message_in_anthropic_terms() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        to_chat(request(messages=[{"role": "user", "content": "a"}, {"role": "tool"}]))
    assert caught.value.param == "messages.1.role"


def test_images_become_image_urls_base64_and_http() -> None:
    content = [
        {"type": "text", "text": "what is it?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]
    chat = to_chat(request(messages=[{"role": "user", "content": content}]))
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            ],
        }
    ]


def test_a_tool_use_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "text", "text": "and then?"},
            ],
        },
    ]
    tools = [
        {
            "name": "weather",
            "description": "the weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    chat = to_chat(
        request(
            messages=messages,
            tools=tools,
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
        )
    )
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert chat["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": "and then?"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": tools[0]["input_schema"],
                "description": "the weather",
            },
        }
    ]
    assert chat["tool_choice"] == "required"
    assert chat["parallel_tool_calls"] is False
    named = to_chat(request(tools=tools, tool_choice={"type": "tool", "name": "weather"}))
    assert named["tool_choice"] == {"type": "function", "function": {"name": "weather"}}


def test_a_block_the_chat_format_cannot_say_is_passed_on_not_dropped() -> None:
    doc = {"type": "document", "source": {"type": "text", "data": "x", "media_type": "text/plain"}}
    chat = to_chat(request(messages=[{"role": "user", "content": [doc]}]))
    assert chat["messages"] == [{"role": "user", "content": [doc]}]


def test_a_streamed_request_asks_for_the_usage_chunk() -> None:
    assert to_chat(request(stream=True))["stream_options"] == {"include_usage": True}


def chat_completion(message: dict[str, Any], finish: str, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def test_a_completion_becomes_a_message_with_its_stop_reason_and_usage() -> None:
    answer = to_message(chat_completion({"content": "Hello"}, "length", cached=4), request())
    assert answer == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 6,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4,
        },
    }


def test_tool_calls_become_tool_use_blocks() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    answer = to_message(chat_completion({"content": None, "tool_calls": [call]}, "tool_calls"), {})
    assert answer["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}
    ]
    assert answer["stop_reason"] == "tool_use"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "chatcmpl-9", "model": "gpt-x", "choices": [choice], **extra}


def events(chunks: list[StreamChunk]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for c in chunks:
        data = orjson.loads(c.data)
        assert c.event is not None and data["type"] == c.event.decode()
        out.append((data["type"], data))
    return out


def test_a_text_stream_is_anthropics_exact_event_sequence() -> None:
    stream = MessagesStream(model="claude-x")
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}, "stop"),
        {"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    ]
    out = [e for c in chunks for e in stream.feed(c)] + stream.end()
    seen = events(out)
    assert [name for name, _ in seen] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert seen[0][1]["message"]["id"] == "msg_chatcmpl-9"
    assert seen[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert seen[3][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert seen[6][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert seen[6][1]["usage"]["output_tokens"] == 2
    assert seen[6][1]["usage"]["input_tokens"] == 7


def test_a_tool_call_stream_opens_a_tool_use_block_with_json_deltas() -> None:
    stream = MessagesStream(model="claude-x")
    first = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}
    chunks = [
        chunk({"content": "Checking."}),
        chunk({"tool_calls": [first]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "tool_calls"),
    ]
    seen = events([e for c in chunks for e in stream.feed(c)] + stream.end())
    names = [name for name, _ in seen]
    assert names[:5] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
    ]
    assert seen[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    assert seen[5][1]["index"] == 1
    deltas = [d["delta"] for n, d in seen if n == "content_block_delta"]
    partial = [d["partial_json"] for d in deltas if d["type"] == "input_json_delta"]
    assert "".join(partial) == '{"a":1}'
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InvalidRequestError("x"), "invalid_request_error"),
        (AuthenticationError("x"), "authentication_error"),
        (PermissionDeniedError("x"), "permission_error"),
        (NotFoundError("x"), "not_found_error"),
        (RequestTooLargeError("x"), "request_too_large"),
        (RateLimitError("x"), "rate_limit_error"),
        (InsufficientQuotaError("x"), "rate_limit_error"),
        (APIError("x"), "api_error"),
        (ServiceUnavailableError("x"), "overloaded_error"),
        (ProviderOverloadedError("x", provider="p", status=529).to_api_error(), "overloaded_error"),
    ],
)
def test_errors_have_anthropics_shape_and_type_for_their_status(error: APIError, kind: str) -> None:
    assert orjson.loads(ANTHROPIC_MESSAGES.error_body(error)) == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
    }
    event = ANTHROPIC_MESSAGES.error_event(error)
    assert event.startswith(b"event: error\ndata: {") and event.endswith(b"\n\n")


def test_a_native_request_keeps_the_body_held_to_the_output_limit() -> None:
    client = request(system=[{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}])
    upstream = UpstreamRequest(
        body={},
        upstream_model="claude-up",
        stream=False,
        max_output_tokens=32,
        api="messages",
        native_body={**client, "model": "claude-up", "max_tokens": 64},
    )
    body = native_body(upstream)
    assert body["max_tokens"] == 32 and body["model"] == "claude-up"
    assert body["system"] == client["system"]  # the breakpoint stays


def test_a_native_stream_passes_events_as_they_came_and_meters_cache_usage() -> None:
    stream = NativeStream(provider="anthropic")
    start = {
        "type": "message_start",
        "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 100}},
    }
    raw = orjson.dumps(start)
    first = stream.feed(start, raw)
    assert first.data is raw and first.event == b"message_start"
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "abc"}}
    assert stream.feed(delta, orjson.dumps(delta)).content_chars == 3
    stream.feed({"type": "message_delta", "usage": {"output_tokens": 9}}, b"{}")
    last = stream.feed({"type": "message_stop"}, b'{"type":"message_stop"}')
    assert stream.done and last.usage is not None
    assert (last.usage.input_tokens, last.usage.cached_tokens, last.usage.output_tokens) == (
        105,
        100,
        9,
    )


def test_the_answer_is_left_untouched_when_the_provider_spoke_the_dialect() -> None:
    call = Call(endpoint="messages", headers={}, raw_body=b"", dialect=ANTHROPIC_MESSAGES)
    step = DialectAnswer(ANTHROPIC_MESSAGES, request())
    call.native = True
    assert step.body(call, b'{"type":"message"}') == b'{"type":"message"}'
    call.native = False
    translated = orjson.loads(
        step.body(call, orjson.dumps(chat_completion({"content": "a"}, "stop")))
    )
    assert translated["type"] == "message" and translated["content"][0]["text"] == "a"
