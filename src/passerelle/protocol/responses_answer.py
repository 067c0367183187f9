"""A ``chat.completion`` as a Responses API ``Response`` object, as pure functions.

The answer's text becomes a ``message`` output item (``output_text`` content), its tool calls
``function_call`` items, its usage Responses' (``input_tokens``, ``output_tokens``,
``total_tokens``, ``input_tokens_details.cached_tokens``); an answer stopped by the output limit
is ``incomplete``. The request's settings are echoed as the API does. Every id a response shows
comes from one ``ResponseIds``, so a streamed answer, its final object and a later ``GET`` agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Item = dict[str, Any]
Message = dict[str, Any]
FINISHED = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponseStatus(StrEnum):
    """A response's ``status``, and its output items' (which are never ``failed``)."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ResponseIds:
    """The ids one response shows: its own and its output items', derived from one value so a
    streamed answer, its final object and a later ``GET`` agree."""

    response: str
    created_at: int

    @classmethod
    def new(cls, hex_id: str, created_at: float | None = None) -> ResponseIds:
        return cls(f"resp_{hex_id}", int(created_at if created_at is not None else time.time()))

    @property
    def message(self) -> str:
        return "msg_" + self.response.removeprefix("resp_")

    def function_call(self, index: int) -> str:
        return f"fc_{self.response.removeprefix('resp_')}_{index}"


# -- answer: chat.completion -> Response ---------------------------------------------------------


def response_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage in Responses terms."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _int(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _int(prompt_details.get("cache_write_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _int(completion_details.get("reasoning_tokens"))
        },
        "total_tokens": _int(usage.get("total_tokens")) or prompt + completion,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def message_item(ids: ResponseIds, text: str, refusal: str | None, status: ResponseStatus) -> Item:
    content: list[dict[str, Any]] = []
    if text or refusal is None:
        content.append(output_text(text))
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "id": ids.message,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(
    ids: ResponseIds, index: int, call_id: str, name: str, arguments: str, status: ResponseStatus
) -> Item:
    return {
        "id": ids.function_call(index),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_items(ids: ResponseIds, message: dict[str, Any]) -> list[Item]:
    """A chat answer's assistant message as output items: its text, then its tool calls."""
    items: list[Item] = []
    text, refusal = message.get("content"), message.get("refusal")
    if (isinstance(text, str) and text) or (isinstance(refusal, str) and refusal):
        items.append(
            message_item(
                ids,
                text if isinstance(text, str) else "",
                refusal or None,
                ResponseStatus.COMPLETED,
            )
        )
    for i, tc in enumerate(message.get("tool_calls") or []):
        fn = tc.get("function") or {}
        items.append(
            function_call_item(
                ids,
                i,
                str(tc.get("id") or ids.function_call(i)),
                str(fn.get("name") or ""),
                str(fn.get("arguments") or ""),
                ResponseStatus.COMPLETED,
            )
        )
    if not items:
        items.append(message_item(ids, "", None, ResponseStatus.COMPLETED))
    return items


def response_object(
    ids: ResponseIds,
    request: dict[str, Any],
    *,
    model: str,
    status: ResponseStatus,
    output: list[Item],
    usage: dict[str, Any] | None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A ``Response``: the request's settings echoed, the output and usage given."""
    incomplete = None
    if status is ResponseStatus.COMPLETED and finish_reason in FINISHED:
        status, incomplete = ResponseStatus.INCOMPLETE, {"reason": FINISHED[finish_reason]}
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    return {
        "id": ids.response,
        "object": "response",
        "created_at": ids.created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "store": request.get("store", True) is not False,
        "temperature": request.get("temperature"),
        "text": {"format": {"type": "text"}, **(text or {})},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def from_chat_completion(
    ids: ResponseIds, chat: dict[str, Any], request: dict[str, Any]
) -> dict[str, Any]:
    """A ``chat.completion`` document as the ``Response`` the client asked for."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    return response_object(
        ids,
        request,
        model=str(chat.get("model") or request.get("model") or ""),
        status=ResponseStatus.COMPLETED,
        output=output_items(ids, message),
        usage=response_usage(chat.get("usage")),
        finish_reason=choice.get("finish_reason"),
    )


def assistant_message(chat: dict[str, Any]) -> Message:
    """The chat answer's assistant message, as the next turn's history holds it."""
    choices = chat.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    out: Message = {"role": "assistant", "content": (message or {}).get("content")}
    if message and message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    if out["content"] is None and "tool_calls" not in out:
        out["content"] = ""
    return out
