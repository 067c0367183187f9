"""The Anthropic provider's translation, both ways, driven as pure functions (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

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
)
from passerelle.providers.anthropic import AnthropicProvider, messages_url
from passerelle.providers.anthropic_wire import (
    AnthropicStreamTranslator,
    from_anthropic_message,
    sse_data,
    to_anthropic_body,
    usage_from_anthropic,
)
from passerelle.providers.base import StreamChunk, UpstreamRequest, Usage
from passerelle.providers.settings import RemoteSettings
from passerelle.providers.upstream_errors import anthropic_error


def body_of(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    request = UpstreamRequest(
        body={"model": "public-name", "messages": messages, **fields},
        upstream_model="claude-x",
        stream=bool(fields.get("stream")),
    )
    return to_anthropic_body(request)


# -- request ------------------------------------------------------------------------------------


def test_system_and_developer_messages_become_one_top_level_system() -> None:
    body = body_of(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello"},
        ]
    )
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": "Hello"}]
    assert body["model"] == "claude-x"


def test_consecutive_same_role_messages_are_merged_into_text_blocks() -> None:
    body = body_of(
        [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "user", "content": ""},  # empty: dropped, Anthropic rejects it
        ]
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "one"},
                {"type": "text", "text": "two"},
            ],
        },
        {"role": "assistant", "content": "three"},
    ]


def test_max_tokens_defaults_to_4096_and_prefers_max_completion_tokens() -> None:
    user = [{"role": "user", "content": "hi"}]
    assert body_of(user)["max_tokens"] == 4096
    assert body_of(user, max_tokens=100)["max_tokens"] == 100
    assert body_of(user, max_tokens=100, max_completion_tokens=50)["max_tokens"] == 50


def test_sampling_stop_stream_and_user_are_mapped_and_unknown_fields_dropped() -> None:
    body = body_of(
        [{"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.9,
        stop="END",
        stream=True,
        user="u-42",
        frequency_penalty=1.0,
        n=2,
        response_format={"type": "json_object"},
        stream_options={"include_usage": True},
        logprobs=True,
    )
    assert body == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "u-42"},
    }
    assert body_of([], stop=["a", "b"])["stop_sequences"] == ["a", "b"]


def test_function_tools_become_anthropic_tools() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "now"}},
        {"type": "web_search"},  # not a function tool: dropped
    ]
    body = body_of([{"role": "user", "content": "hi"}], tools=tools)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "now"}}, None, {"type": "tool", "name": "now"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_is_translated(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "now"}}]
    fields: dict[str, Any] = {"tools": tools, "tool_choice": choice}
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    assert body_of([{"role": "user", "content": "hi"}], **fields)["tool_choice"] == expected


def test_tool_calls_and_tool_results_round_trip_into_blocks() -> None:
    body = body_of(
        [
            {"role": "user", "content": "Weather in Paris and Lyon?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{not json"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "21C"}],
            },
            {"role": "user", "content": "Thanks"},
        ]
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
        ],
    }
    # tool results (and the user turn after them) share one user message, results first
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
            {"type": "text", "text": "Thanks"},
        ],
    }
    assert len(body["messages"]) == 3


def test_image_parts_become_base64_or_url_image_blocks() -> None:
    body = body_of(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "image_url", "image_url": {"url": "ftp://nope"}},
                ],
            }
        ]
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


# -- answer -------------------------------------------------------------------------------------


def test_message_with_text_becomes_a_chat_completion() -> None:
    doc = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Bon"}, {"type": "text", "text": "jour"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    assert from_anthropic_message(doc, "claude-x", created=1700000000) == {
        "id": "msg_1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Bonjour"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_tool_use_blocks_become_tool_calls_with_json_arguments() -> None:
    doc = {
        "id": "msg_2",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    choice = from_anthropic_message(doc, "claude-x")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_1" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason: str, finish: str) -> None:
    doc = {"id": "m", "content": [], "stop_reason": stop_reason}
    assert from_anthropic_message(doc, "m")["choices"][0]["finish_reason"] == finish


def test_cached_tokens_are_counted_once_inside_input_tokens() -> None:
    raw = {
        "input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 50,
        "output_tokens": 7,
    }
    expected = Usage(input_tokens=1150, output_tokens=7, cached_tokens=1000, cache_write_tokens=50)
    assert usage_from_anthropic(raw) == expected
    usage = from_anthropic_message({"id": "m", "content": [], "usage": raw}, "m")["usage"]
    assert usage == {
        "prompt_tokens": 1150,
        "completion_tokens": 7,
        "total_tokens": 1157,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }
    assert usage_from_anthropic(None).reported is False


def test_anthropic_error_shape_gives_the_message() -> None:
    raw = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert anthropic_error("claude", 529, raw).message == "overloaded_error: Overloaded"
    assert anthropic_error("claude", 502, b"<html>bad gateway</html>").message == "HTTP 502"


def test_messages_url_accepts_a_base_with_or_without_v1() -> None:
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert messages_url("http://fake:9/v1/") == "http://fake:9/v1/messages"


# -- streams ------------------------------------------------------------------------------------


def sse(*events: tuple[str, dict[str, Any]]) -> list[bytes]:
    lines: list[bytes] = []
    for name, data in events:
        lines += [f"event: {name}\n".encode(), b"data: " + orjson.dumps(data) + b"\n", b"\n"]
    return lines


TEXT_STREAM = sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_s",
                "model": "claude-x",
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 80, "output_tokens": 1},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " world"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 5},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)


def translate(lines: list[bytes], *, include_usage: bool = False) -> list[StreamChunk]:
    translator = AnthropicStreamTranslator(
        provider="claude", model="fallback", include_usage=include_usage, created=1
    )
    chunks: list[StreamChunk] = []
    for line in lines:
        data = sse_data(line)
        if data is not None:
            chunks += translator.feed(str(data["type"]), data)
    assert translator.done
    return chunks


def test_text_stream_becomes_role_content_finish_and_usage_chunks() -> None:
    chunks = translate(TEXT_STREAM)
    payloads = [orjson.loads(c.data) for c in chunks]
    assert [p["choices"][0]["delta"] for p in payloads[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " world"},
        {},
    ]
    assert [p["choices"][0]["finish_reason"] for p in payloads[:-1]] == [None, None, None, "stop"]
    assert all(p["object"] == "chat.completion.chunk" and p["id"] == "msg_s" for p in payloads)
    assert all(p["model"] == "claude-x" for p in payloads)
    assert [c.content_chars for c in chunks] == [0, 5, 6, 0, 0]
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "total_tokens": 105,
        "prompt_tokens_details": {"cached_tokens": 80},
    }
    assert chunks[-1].usage == Usage(input_tokens=100, output_tokens=5, cached_tokens=80)
    assert all(c.usage is None and c.forward for c in chunks[:-1])


def test_usage_chunk_is_forwarded_only_when_the_client_asked() -> None:
    assert translate(TEXT_STREAM)[-1].forward is False
    assert translate(TEXT_STREAM, include_usage=True)[-1].forward is True


def json_delta(index: int, partial: str) -> tuple[str, dict[str, Any]]:
    delta = {"type": "input_json_delta", "partial_json": partial}
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def test_tool_use_stream_becomes_tool_call_deltas() -> None:
    lines = sse(
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_t",
                    "model": "claude-x",
                    "usage": {"input_tokens": 5, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Checking."},
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_9",
                    "name": "get_weather",
                    "input": {},
                },
            },
        ),
        json_delta(1, '{"city":'),
        json_delta(1, ' "Paris"}'),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 12},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    payloads = [orjson.loads(c.data) for c in translate(lines)]
    deltas = [p["choices"][0]["delta"] for p in payloads[:-1]]
    assert deltas[2] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "toolu_9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:5])
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[-1]["usage"]["completion_tokens"] == 12


def test_an_overloaded_error_event_raises_an_overloaded_provider_error() -> None:
    translator = AnthropicStreamTranslator(provider="claude", model="m", include_usage=False)
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ProviderOverloadedError) as info:
        translator.feed("error", error)
    assert info.value.retryable and info.value.provider == "claude"
    assert "overloaded_error" in info.value.message


def test_stream_without_message_stop_is_not_done() -> None:
    translator = AnthropicStreamTranslator(provider="claude", model="m", include_usage=False)
    for line in TEXT_STREAM[:-3]:
        data = sse_data(line)
        if data is not None:
            translator.feed(str(data["type"]), data)
    assert not translator.done


def test_sse_data_ignores_event_and_blank_lines_and_rejects_bad_json() -> None:
    assert sse_data(b"event: ping\n") is None
    assert sse_data(b"\n") is None
    assert sse_data(b'data: {"type": "ping"}\r\n') == {"type": "ping"}
    with pytest.raises(ValueError):
        sse_data(b"data: {truncated")


# -- the provider, over a fake transport (no sockets) -------------------------------------------


class FakeResponse:
    def __init__(self, status: int, lines: list[bytes]) -> None:
        self.status = status
        self._lines = lines
        self.headers: dict[str, str] = {}

    async def read(self) -> bytes:
        return b"".join(self._lines)

    @property
    def content(self) -> AsyncIterator[bytes]:
        async def lines() -> AsyncIterator[bytes]:
            for line in self._lines:
                yield line

        return lines()


class FakeTransport:
    def __init__(self, status: int, lines: list[bytes]) -> None:
        self.status, self.lines = status, lines
        self.sent: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    async def post(
        self, provider: str, url: str, body: bytes, headers: Any
    ) -> tuple[int, bytes, str | None]:
        self.sent.append((url, orjson.loads(body), dict(headers)))
        return self.status, b"".join(self.lines), None

    @asynccontextmanager
    async def stream(
        self, provider: str, url: str, body: bytes, headers: Any
    ) -> AsyncIterator[FakeResponse]:
        self.sent.append((url, orjson.loads(body), dict(headers)))
        yield FakeResponse(self.status, self.lines)


def provider_with(status: int, lines: list[bytes]) -> tuple[AnthropicProvider, FakeTransport]:
    transport = FakeTransport(status, lines)
    settings = RemoteSettings(name="claude", kind="anthropic", api_key="sk-test")
    return AnthropicProvider(settings, transport), transport  # type: ignore[arg-type]


REQUEST = UpstreamRequest(
    body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    upstream_model="claude-x",
    stream=False,
)


def test_complete_posts_to_messages_with_anthropic_headers() -> None:
    answer = {
        "id": "msg_1",
        "model": "claude-x-2025",
        "content": [{"type": "text", "text": "yo"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    provider, transport = provider_with(200, [orjson.dumps(answer)])
    completion = asyncio.run(provider.complete(REQUEST))
    url, body, headers = transport.sent[0]
    assert url == "https://api.anthropic.com/v1/messages"
    assert headers["x-api-key"] == "sk-test" and headers["anthropic-version"] == "2023-06-01"
    assert "stream" not in body
    assert orjson.loads(completion.body)["choices"][0]["message"]["content"] == "yo"
    assert completion.usage == Usage(input_tokens=3, output_tokens=1)
    assert completion.upstream_model == "claude-x-2025"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ProviderRejectedError),
        (401, ProviderCredentialError),
        (404, ProviderNotFoundError),
        (429, ProviderBackPressureError),
        (500, ProviderFailedError),
        (529, ProviderOverloadedError),
    ],
)
def test_http_errors_become_provider_errors_of_their_kind(
    status: int, kind: type[ProviderError]
) -> None:
    raw = b'{"type":"error","error":{"type":"some_error","message":"nope"}}'
    provider, _ = provider_with(status, [raw])
    with pytest.raises(ProviderError) as info:
        asyncio.run(provider.complete(REQUEST))
    assert type(info.value) is kind
    assert info.value.status == status
    assert info.value.message == "some_error: nope"


def collect(provider: AnthropicProvider, request: UpstreamRequest) -> list[StreamChunk]:
    async def run() -> list[StreamChunk]:
        return [chunk async for chunk in provider.stream(request)]

    return asyncio.run(run())


def test_stream_yields_translated_chunks() -> None:
    provider, transport = provider_with(200, TEXT_STREAM)
    chunks = collect(provider, REQUEST)
    assert transport.sent[0][1]["stream"] is True
    assert len(chunks) == 5 and chunks[-1].usage is not None


def test_stream_cut_before_message_stop_raises_retryable() -> None:
    provider, _ = provider_with(200, TEXT_STREAM[:-3])
    with pytest.raises(ProviderError) as info:
        collect(provider, REQUEST)
    assert info.value.retryable


def test_embeddings_are_refused_with_400() -> None:
    provider, _ = provider_with(200, [])
    assert provider.capabilities.embeddings is False and provider.capabilities.vision
    with pytest.raises(ProviderError) as info:
        asyncio.run(provider.embed(REQUEST))
    assert info.value.status == 400 and not info.value.retryable and not info.value.falls_back
