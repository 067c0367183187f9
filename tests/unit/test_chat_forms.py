"""A chat answer's two forms rebuilt from each other, and what makes an answer whole."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from passerelle.protocol.chat_forms import chunks_of, gather, stream_unfinished, unfinished

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


def chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**HEAD, "choices": list(choices), **extra}


def delta(index: int, finish: str | None = None, logprobs: Any = None, **d: Any) -> dict[str, Any]:
    return {"index": index, "delta": d, "logprobs": logprobs, "finish_reason": finish}


def test_two_choices_with_tool_calls_in_pieces_gather_into_one_document() -> None:
    lp = {"content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": []}]}
    chunks = [
        chunk(delta(0, role="assistant", content=""), delta(1, role="assistant")),
        chunk(delta(0, content="Hi", logprobs=lp)),
        chunk(delta(1, tool_calls=[{"index": 0, "id": "call_1", "function": {"name": "f"}}])),
        chunk(delta(0, content=" there", logprobs=lp)),
        chunk(delta(1, tool_calls=[{"index": 0, "function": {"arguments": '{"a":'}}])),
        chunk(delta(1, tool_calls=[{"index": 0, "function": {"arguments": "1}"}}])),
        chunk(delta(0, finish="stop"), delta(1, finish="tool_calls")),
        chunk(usage={"prompt_tokens": 3, "completion_tokens": 4}),
    ]
    doc = gather(chunks)
    assert doc["id"] == "chatcmpl-1" and doc["object"] == "chat.completion"
    assert doc["usage"] == {"prompt_tokens": 3, "completion_tokens": 4}
    first, second = doc["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hi there", "refusal": None}
    assert first["logprobs"]["content"] == lp["content"] * 2 and first["finish_reason"] == "stop"
    assert second["message"]["content"] is None
    assert second["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert second["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_document_told_as_a_stream_gathers_back_into_itself(include_usage: bool) -> None:
    doc = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 9,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            },
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        "system_fingerprint": "fp",
    }
    chunks = chunks_of(doc, include_usage=include_usage)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-2" for c in chunks)
    assert (chunks[-1]["choices"] == []) is include_usage
    assert all(("usage" in c) is include_usage for c in chunks)
    back = gather(chunks)
    assert back["choices"] == doc["choices"]
    assert back["usage"] == (doc["usage"] if include_usage else None)


@pytest.mark.parametrize(
    ("choice", "own_limit", "why"),
    [
        ({"finish_reason": "stop", "message": {"content": "x"}}, False, None),
        ({"finish_reason": "tool_calls", "message": {"tool_calls": []}}, False, None),
        ({"finish_reason": "length", "message": {"content": "x"}}, True, None),
        ({"finish_reason": "length", "message": {"content": "x"}}, False, "output limit"),
        ({"finish_reason": "content_filter", "message": {"content": ""}}, True, "content_filter"),
        ({"finish_reason": None, "message": {"content": "x"}}, True, "None"),
        ({"finish_reason": "stop", "message": {"content": None, "refusal": "no"}}, True, "refusal"),
    ],
)
def test_only_an_answer_that_ended_of_its_own_accord_is_whole(
    choice: dict[str, Any], own_limit: bool, why: str | None
) -> None:
    reason = unfinished({"choices": [choice]}, length_is_complete=own_limit)
    assert (reason is None) if why is None else (reason is not None and why in reason)


def test_an_answer_without_choices_is_not_whole() -> None:
    assert unfinished({"choices": []}, length_is_complete=True) == "no choices"
    assert unfinished({}, length_is_complete=True) == "no choices"


def events(*chunks: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(c) for c in chunks]


def test_a_stream_is_whole_when_every_choice_asked_for_ended_of_its_own_accord() -> None:
    both = events(
        chunk(delta(0, content="a"), delta(1, content="b")),
        chunk(delta(0, finish="stop")),
        chunk(delta(1, finish="tool_calls")),
        chunk(usage={"prompt_tokens": 1}),
    )
    assert stream_unfinished(both, choices=2, length_is_complete=False) is None
    one_left = both[:2] + both[3:]
    assert "never ended" in str(stream_unfinished(one_left, choices=2, length_is_complete=False))
    spaced = [b'{"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}']
    assert "content_filter" in str(stream_unfinished(spaced, choices=1, length_is_complete=True))


def test_a_refusal_anywhere_in_a_stream_is_found_but_not_a_word_in_its_text() -> None:
    said = chunk(delta(0, content='he wrote {"refusal": "x", "finish_reason": "stop"}'))
    end = chunk(delta(0, finish="stop"))
    assert stream_unfinished(events(said, end), choices=1, length_is_complete=False) is None
    openai_first = chunk(delta(0, role="assistant", content="", refusal=None))
    assert stream_unfinished(events(openai_first, end), choices=1, length_is_complete=False) is None
    refused = chunk(delta(0, refusal="I can't"))
    why = stream_unfinished(events(openai_first, refused, end), choices=1, length_is_complete=False)
    assert why == "a refusal"
