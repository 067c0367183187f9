"""Anthropic's Messages API wire format, translated to and from OpenAI's, as pure functions.

Requests (``to_anthropic_body``), answers (``from_anthropic_message``), usage
(``usage_from_anthropic``: Anthropic's ``input_tokens`` excludes cached tokens, so cache reads and
writes are added back in, and cache reads are also reported as ``cached_tokens``) and stream events
(``sse_data``, ``AnthropicStreamTranslator``). No I/O here: the unit tests drive it all without a
network; ``providers/anthropic.py`` moves the bytes.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from passerelle.providers.base import StreamChunk, UpstreamRequest, Usage
from passerelle.providers.upstream_errors import anthropic_stream_error

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often leave it out

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}

Block = dict[str, Any]


# -- request: OpenAI chat body -> Messages body -------------------------------------------------


def to_anthropic_body(request: UpstreamRequest) -> dict[str, Any]:
    """Translate an OpenAI chat body; fields Anthropic has no use for are dropped."""
    src = request.body
    system, messages = _split_messages(src.get("messages") or [])
    out: dict[str, Any] = {
        "model": request.upstream_model,
        "max_tokens": request.max_output_tokens or _max_tokens(src),
        "messages": messages,
    }
    if system:
        out["system"] = system
    for key in ("temperature", "top_p"):
        if isinstance(src.get(key), int | float):
            out[key] = src[key]
    stop = src.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [s for s in stop if isinstance(s, str)]
    if request.stream:
        out["stream"] = True
    tools = _tools(src.get("tools"))
    if tools:
        out["tools"] = tools
        choice = _tool_choice(src.get("tool_choice"), src.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if isinstance(src.get("user"), str):
        out["metadata"] = {"user_id": src["user"]}
    return out


def _max_tokens(src: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = src.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


def _split_messages(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """System text, and user/assistant turns with consecutive same-role turns merged."""
    system: list[str] = []
    turns: list[tuple[str, list[Block]]] = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text_of(m.get("content"))
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _content_blocks(m.get("content"), images=True)
        elif role == "assistant":
            blocks = _content_blocks(m.get("content"), images=False) + _tool_uses(m)
        elif role == "tool":
            role, blocks = "user", [_tool_result(m)]
        else:
            continue
        if not blocks:  # Anthropic rejects empty messages
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((str(role), blocks))
    return "\n\n".join(system), [{"role": r, "content": _collapse(b)} for r, b in turns]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _content_blocks(content: Any, *, images: bool) -> list[Block]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Block] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url" and images:
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            image = image_block(url) if isinstance(url, str) else None
            if image is not None:
                blocks.append(image)
    return blocks


def image_block(url: str) -> Block | None:
    """An OpenAI image URL (``data:`` base64 or http) as an Anthropic image block."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            return None
        source = {"type": "base64", "media_type": media_type or "image/png", "data": data}
        return {"type": "image", "source": source}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def _tool_uses(message: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": _arguments(fn.get("arguments")),
            }
        )
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    """OpenAI arguments are a JSON string; Anthropic wants an object ({} if it is not one)."""
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw) if isinstance(raw, str | bytes) and raw else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_result(message: dict[str, Any]) -> Block:
    text = _text_of(message.get("content"))
    block: Block = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    return {**block, "content": text} if text else block


def _collapse(blocks: list[Block]) -> str | list[Block]:
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return str(blocks[0]["text"])
    return blocks


def _tools(tools: Any) -> list[Block]:
    out: list[Block] = []
    for tool in tools if isinstance(tools, list) else []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and tool.get("type") == "function":
            schema = fn.get("parameters") or {"type": "object", "properties": {}}
            out.append({"name": fn.get("name"), "input_schema": schema})
            if fn.get("description"):
                out[-1]["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> Block | None:
    """OpenAI ``tool_choice`` (and ``parallel_tool_calls: false``) in Anthropic's form."""
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out: Block = {"type": "tool", "name": choice["function"].get("name")}
    elif isinstance(choice, str) and choice in TOOL_CHOICES:
        out = {"type": TOOL_CHOICES[choice]}
    elif parallel is False:
        out = {"type": "auto"}
    else:
        return None
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


# -- answer: Messages response -> OpenAI chat.completion ----------------------------------------


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def usage_from_anthropic(obj: Any) -> Usage:
    """Normalise Anthropic usage: cache reads and writes are input, cache reads counted once."""
    if not isinstance(obj, dict):
        return Usage(reported=False)
    read = _int(obj.get("cache_read_input_tokens"))
    written = _int(obj.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=_int(obj.get("input_tokens")) + read + written,
        output_tokens=_int(obj.get("output_tokens")),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def from_anthropic_message(
    doc: dict[str, Any], model: str, *, created: int | None = None
) -> dict[str, Any]:
    """Translate a Messages answer into an OpenAI ``chat.completion`` document."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in doc.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(doc.get("stop_reason")),
    }
    return {
        "id": doc.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [choice],
        "usage": openai_usage(usage_from_anthropic(doc.get("usage"))),
    }


# -- streams: Anthropic SSE events -> OpenAI chat.completion.chunk ------------------------------


def _obj(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def sse_data(line: bytes) -> dict[str, Any] | None:
    """The JSON object of an SSE ``data:`` line, None for other lines; ``ValueError`` if bad.

    Anthropic repeats each ``event:`` name as the data's ``type``, so the data alone is enough.
    """
    if not line.startswith(b"data:"):
        return None
    data = orjson.loads(line[5:].strip())
    if not isinstance(data, dict):
        raise ValueError("event data is not a JSON object")
    return data


class AnthropicStreamTranslator:
    """Anthropic stream events in, OpenAI chunk payloads out; pure (no I/O)."""

    def __init__(
        self, *, provider: str, model: str, include_usage: bool, created: int | None = None
    ) -> None:
        self.provider = provider
        self.done = False  # message_stop seen
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = ""
        self._usage: dict[str, Any] = {}
        self._tools: dict[Any, int] = {}  # Anthropic block index -> OpenAI tool_call index

    def feed(self, event: str, data: dict[str, Any]) -> list[StreamChunk]:
        """The chunks one event makes; an ``error`` event raises the ``ProviderError`` of its kind."""
        handler = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
            "error": self._error,
        }.get(event)
        # ping, content_block_stop, and event types added after this was written make nothing
        return handler(data) if handler else []

    def _error(self, data: dict[str, Any]) -> list[StreamChunk]:
        raise anthropic_stream_error(self.provider, _obj(data, "error"))

    def _message_start(self, data: dict[str, Any]) -> list[StreamChunk]:
        msg = _obj(data, "message")
        self._id = str(msg.get("id") or "")
        self._model = str(msg.get("model") or self._model)
        self._merge_usage(msg.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: dict[str, Any]) -> list[StreamChunk]:
        block = _obj(data, "content_block")
        if block.get("type") == "tool_use":
            n = self._tools[data.get("index")] = len(self._tools)
            call = {
                "index": n,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        text = block.get("text") if block.get("type") == "text" else None
        return [self._chunk({"content": text}, chars=len(text))] if text else []

    def _block_delta(self, data: dict[str, Any]) -> list[StreamChunk]:
        delta = _obj(data, "delta")
        if delta.get("type") == "text_delta":
            text = str(delta.get("text") or "")
            return [self._chunk({"content": text}, chars=len(text))] if text else []
        if delta.get("type") == "input_json_delta":
            n = self._tools.get(data.get("index"))
            partial = str(delta.get("partial_json") or "")
            if n is None or not partial:
                return []
            call = {"index": n, "function": {"arguments": partial}}
            return [self._chunk({"tool_calls": [call]}, chars=len(partial))]
        return []  # thinking and signature deltas are not part of the OpenAI answer

    def _message_delta(self, data: dict[str, Any]) -> list[StreamChunk]:
        self._merge_usage(data.get("usage"))
        delta = _obj(data, "delta")
        return [self._chunk({}, finish=finish_reason(delta.get("stop_reason")))]

    def _message_stop(self, data: dict[str, Any]) -> list[StreamChunk]:
        self.done = True
        usage = usage_from_anthropic(self._usage)
        payload = {**self._envelope(), "choices": [], "usage": openai_usage(usage)}
        return [StreamChunk(data=orjson.dumps(payload), usage=usage, forward=self._include_usage)]

    def _merge_usage(self, usage: Any) -> None:
        # message_delta counts are cumulative, so later values replace earlier ones
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(
        self, delta: dict[str, Any], *, chars: int = 0, finish: str | None = None
    ) -> StreamChunk:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        payload = {**self._envelope(), "choices": [choice]}
        return StreamChunk(data=orjson.dumps(payload), content_chars=chars)
