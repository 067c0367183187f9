"""OpenAI ``chat.completion.chunk`` events as Anthropic's Messages stream, event for event.

Anthropic's sequence is strict and its SDK relies on it: ``message_start``, then for each content
block ``content_block_start``, its deltas (``text_delta``, or ``input_json_delta`` for a tool
call's arguments) and ``content_block_stop``, a ``ping`` after the first block starts, then
``message_delta`` (the ``stop_reason`` and the usage) and ``message_stop``. A chat stream says
none of this directly: a block opens when the kind of delta changes (text, or a new tool call),
and the usage arrives in the last chunk, so ``message_delta`` is sent by ``end``. Pure (no I/O).
"""

from __future__ import annotations

from typing import Any

import orjson

from passerelle.providers.base import StreamChunk

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: Any) -> str:
    return (
        STOP_REASONS.get(finish_reason, "end_turn")
        if isinstance(finish_reason, str)
        else "end_turn"
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def message_usage(usage: Any) -> dict[str, int]:
    """OpenAI's usage in Anthropic's terms: its ``input_tokens`` leave out cache reads."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(0, _int(usage.get("prompt_tokens")) - cached),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def message_id(chat_id: Any) -> str:
    """A chat completion's id as a message's (Anthropic's start with ``msg_``)."""
    text = chat_id if isinstance(chat_id, str) else ""
    return text if text.startswith("msg_") else f"msg_{text}"


def event(name: str, data: dict[str, Any], chars: int = 0) -> StreamChunk:
    return StreamChunk(
        data=orjson.dumps({"type": name, **data}), event=name.encode(), content_chars=chars
    )


class MessagesStream:
    """One streamed call's state: the open block (its index, and for a tool call its chat
    index), whether ``ping`` went out, and what the last chunks said of the end."""

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._started = False
        self._pinged = False
        self._index = -1  # the open block's index, -1 when none is open
        self._open: str | int | None = None  # "text", a tool call's chat index, or None
        self._stop = "end_turn"
        self._usage: dict[str, int] = message_usage(None)

    def feed(self, chunk: dict[str, Any]) -> list[StreamChunk]:
        out = [] if self._started else [self._message_start(chunk)]
        self._started = True
        if isinstance(chunk.get("usage"), dict):
            self._usage = message_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one message: the first choice
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out += self._delta(delta)
            if choice.get("finish_reason"):
                self._stop = stop_reason(choice["finish_reason"])
        return out

    def end(self) -> list[StreamChunk]:
        out = [] if self._started else [self._message_start({})]
        out += self._close()
        if not self._pinged:
            out.append(event("ping", {}))
        delta = {"stop_reason": self._stop, "stop_sequence": None}
        out.append(event("message_delta", {"delta": delta, "usage": self._usage}))
        out.append(event("message_stop", {}))
        return out

    def _message_start(self, chunk: dict[str, Any]) -> StreamChunk:
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return event("message_start", {"message": message})

    def _delta(self, delta: dict[str, Any]) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self._open != "text":
                out += self._start("text", {"type": "text", "text": ""})
            body = {"index": self._index, "delta": {"type": "text_delta", "text": text}}
            out.append(event("content_block_delta", body, len(text)))
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                out += self._tool_delta(call)
        return out

    def _tool_delta(self, call: dict[str, Any]) -> list[StreamChunk]:
        out: list[StreamChunk] = []
        n = _int(call.get("index"))
        got = call.get("function")
        fn: dict[str, Any] = got if isinstance(got, dict) else {}
        if self._open != n or call.get("id"):
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": {},
            }
            out += self._start(n, block)
        partial = fn.get("arguments")
        if isinstance(partial, str) and partial:
            body = {
                "index": self._index,
                "delta": {"type": "input_json_delta", "partial_json": partial},
            }
            out.append(event("content_block_delta", body, len(partial)))
        return out

    def _start(self, kind: str | int, block: dict[str, Any]) -> list[StreamChunk]:
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(event("content_block_start", {"index": self._index, "content_block": block}))
        if not self._pinged:
            self._pinged = True
            out.append(event("ping", {}))
        return out

    def _close(self) -> list[StreamChunk]:
        if self._open is None:
            return []
        self._open = None
        return [event("content_block_stop", {"index": self._index})]
