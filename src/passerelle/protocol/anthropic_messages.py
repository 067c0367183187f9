"""Anthropic's Messages API as an inbound dialect (``POST /v1/messages``), as pure functions.

The request becomes an OpenAI chat body (``to_chat``): the system prompt (a string or text
blocks) as a system message, text and image blocks as content parts, ``tool_use`` blocks as an
assistant's ``tool_calls``, ``tool_result`` blocks as ``tool`` messages, tools and ``tool_choice``
in OpenAI's form, ``stop_sequences`` as ``stop``, ``metadata.user_id`` as ``user``. A block type
the chat format has no word for is passed on as it is, for the upstream to accept or refuse: no
part of a request is dropped without a word. The answer goes back as a Messages answer
(``to_message``), a stream as Anthropic's own event sequence (``messages_stream.py``), an error as
``{"type": "error", "error": {"type", "message"}}`` with Anthropic's type for its status. The
opposite direction (the gateway calling Anthropic) is ``providers/anthropic_wire.py``, whose
pieces are reused here.
"""

from __future__ import annotations

from typing import Any

import orjson

from passerelle.errors import APIError, InvalidRequestError
from passerelle.pricing.estimate import estimate_prompt_tokens
from passerelle.protocol.base import StreamTranslator
from passerelle.protocol.messages_stream import (
    MessagesStream,
    message_id,
    message_usage,
    stop_reason,
)
from passerelle.providers.anthropic_wire import tool_arguments

# Anthropic's error type for each status the gateway answers with (anything else: by class)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# the sampling fields that mean the same in both formats
SAME_FIELDS = ("temperature", "top_p", "top_k", "stream")
Block = dict[str, Any]


def _bad(message: str, param: str, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param, code=code)


# -- request: Messages body -> OpenAI chat body -------------------------------------------------


def to_chat(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The Messages request as an OpenAI chat body. ``max_tokens`` is required, as Anthropic
    requires it (not when ``counting`` tokens)."""
    max_tokens = body.get("max_tokens")
    if not counting and max_tokens is None:
        raise _bad("Field required", "max_tokens", "missing_required_parameter")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _bad("must be an integer of at least 1", "max_tokens")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body)}
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens
    chat.update({k: body[k] for k in SAME_FIELDS if body.get(k) is not None})
    if body.get("stream") is True:
        chat["stream_options"] = {"include_usage": True}  # message_delta always carries usage
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("must be an array of strings", "stop_sequences", "invalid_type")
        if stop:
            chat["stop"] = stop
    tools = body.get("tools")
    if tools is not None:
        chat["tools"] = _tools(tools)
    choice = body.get("tool_choice")
    if choice is not None:
        chat.update(_tool_choice(choice))
    meta = body.get("metadata")
    if isinstance(meta, dict):
        if meta.get("user_id") is not None:
            chat["user"] = meta["user_id"]
        rest = {k: v for k, v in meta.items() if k != "user_id"}
        if rest:  # a gateway field (``feature``), read and removed by parse
            chat["metadata"] = rest
    elif meta is not None:
        raise _bad("must be an object", "metadata", "invalid_type")
    return chat


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _system_text(system)
        if text:
            out.append({"role": "system", "content": text})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("must be a non-empty array", "messages", "invalid_type")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad("must be an object", f"messages.{i}", "invalid_type")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _bad("must be 'user' or 'assistant'", f"messages.{i}.role")
        blocks = _blocks(message.get("content"), f"messages.{i}.content")
        out += _user_turn(blocks) if role == "user" else [_assistant_turn(blocks)]
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        parts = [b.get("text") for b in system if isinstance(b, dict) and b.get("type") == "text"]
        if len(parts) == len(system) and all(isinstance(p, str) for p in parts):
            return "\n\n".join(str(p) for p in parts)
    raise _bad("must be a string or an array of text blocks", "system", "invalid_type")


def _blocks(content: Any, param: str) -> list[Block]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad("must be a string or an array of content blocks", param, "invalid_type")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad("must be an object with a type", f"{param}.{j}", "invalid_type")
    return content


def image_block_url(block: Block) -> str | None:
    """An Anthropic image block's source as an OpenAI image URL (``data:`` base64, or http)."""
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    return None


def _part(block: Block) -> Block:
    """A user's content block as a chat content part."""
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": block.get("text")}
    if kind == "image":
        url = image_block_url(block)
        if url is not None:
            return {"type": "image_url", "image_url": {"url": url}}
    return block  # the chat format has no word for it: the upstream decides


def _user_turn(blocks: list[Block]) -> list[dict[str, Any]]:
    """Tool results first, as ``tool`` messages (Anthropic puts them first too), then the rest."""
    out: list[dict[str, Any]] = []
    parts: list[Block] = []
    for block in blocks:
        if block["type"] == "tool_result":
            out.append(_tool_message(block))
        else:
            parts.append(_part(block))
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def _tool_message(block: Block) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        content = "\n".join(t for t in texts if isinstance(t, str))
    text = content if isinstance(content, str) else ""
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _assistant_turn(blocks: list[Block]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] == "text":
            texts.append(str(block.get("text") or ""))
        elif block["type"] == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        # thinking blocks are the model's own notes, which a chat upstream cannot take back
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tools(tools: Any) -> list[Block]:
    if not isinstance(tools, list):
        raise _bad("must be an array", "tools", "invalid_type")
    out: list[Block] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad("must be an object with a name", f"tools.{i}", "invalid_type")
        if "input_schema" not in tool:  # a server tool (web search...): the upstream decides
            out.append(tool)
            continue
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice.get("name"), str):
        out: dict[str, Any] = {
            "tool_choice": {"type": "function", "function": {"name": choice["name"]}}
        }
    elif kind in ("auto", "none"):
        out = {"tool_choice": kind}
    elif kind == "any":
        out = {"tool_choice": "required"}
    else:
        raise _bad("type must be one of auto, any, tool, none", "tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


def count_tokens(body: dict[str, Any]) -> int:
    """``/v1/messages/count_tokens``: the gateway's own estimate of the prompt, the one budgets
    reserve with (it errs high)."""
    return estimate_prompt_tokens(to_chat(body, counting=True))


# -- answer: OpenAI chat.completion -> Messages answer ------------------------------------------


def to_message(chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` document as a Messages answer (the first choice)."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content: list[Block] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": fn.get("name"),
                    "input": tool_arguments(fn.get("arguments")),
                }
            )
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model") or request.get("model"),
        "content": content,
        "stop_reason": stop_reason(
            choice.get("finish_reason") if isinstance(choice, dict) else None
        ),
        "stop_sequence": None,
        "usage": message_usage(chat.get("usage")),
    }


# -- errors -------------------------------------------------------------------------------------


def error_type(error: APIError) -> str:
    if error.status in ERROR_TYPES:
        return ERROR_TYPES[error.status]
    return "invalid_request_error" if error.status < 500 else "api_error"


def error_body(error: APIError) -> bytes:
    return orjson.dumps(
        {"type": "error", "error": {"type": error_type(error), "message": error.message}}
    )


class AnthropicMessages:
    """The dialect of ``POST /v1/messages``."""

    name = "messages"
    done = b""  # message_stop ends the stream
    # a passthrough keeps the client's beta flags: Claude Code asks for features by them
    native_headers: tuple[str, ...] = ("anthropic-beta",)

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return to_chat(body)

    def completion(self, chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        return to_message(chat, request)

    def stream_translator(self, request: dict[str, Any]) -> StreamTranslator:
        return MessagesStream(model=str(request.get("model") or ""))

    def error_body(self, error: APIError) -> bytes:
        return error_body(error)

    def error_event(self, error: APIError) -> bytes:
        return b"event: error\ndata: " + error_body(error) + b"\n\n"


ANTHROPIC_MESSAGES = AnthropicMessages()
