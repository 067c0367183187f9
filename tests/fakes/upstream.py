"""Fake upstream LLM server for Passerelle's tests and benchmarks.

Passerelle is a gateway: testing retries, streaming relay, usage accounting and
error mapping needs an upstream scriptable per request and cheap enough to sit
behind a load test.  This module is that server (run as its own process) and
`UpstreamProcess`, a helper that starts it from a test:

    python tests/fakes/upstream.py --host 127.0.0.1 --port 0
    -> prints exactly one line "READY http://127.0.0.1:<port>" once listening

It speaks OpenAI's wire format (/v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/models; tool calls, `n`, logprobs and JSON answers in openai_features.py) and
Anthropic's Messages API (/v1/messages).  Behaviour comes from `#name:value`
directives in the last user message, overridden by the next item of the control
queue (POST /_control/script); see tests/fakes/README.md.  Needs aiohttp (imported
lazily, so tests can import `UpstreamProcess` without it); orjson/uvloop if present.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import re
import signal
import socket
import struct
import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

try:
    from tests.fakes.process import ServerProcess
except ImportError:  # run as a script: tests/ is not a package root then
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fakes.process import ServerProcess
from tests.fakes import openai_features as features

try:
    from orjson import dumps, loads
except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    loads = json.loads

DEFAULT_REPLY = "Hello from fake upstream."
DIRECTIVE_RE = re.compile(
    r"#(status|latency|chunk_delay|cut|usage|reply|words|garbage|retry_after|tool_call):(\S+)"
)
MODELS_BODY = dumps(
    {
        "object": "list",
        "data": [
            {
                "id": "fake-model",
                "object": "model",
                "created": 1700000000,
                "owned_by": "passerelle-fake",
            }
        ],
    }
)
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
Usage = tuple[int, int, int]  # (prompt, completion, cached)


@dataclass(frozen=True)
class Behaviour:
    """What to do for one completion/messages request."""

    status: int = 200
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    cut: int | None = None
    usage: Usage | None = None
    reply: str = DEFAULT_REPLY
    garbage: bool = False  # a 200 whose body is not JSON
    retry_after: str | None = None  # the Retry-After sent with a 429, 503 or 529, if any
    error: dict | None = None  # fields of the error object sent with a status >= 400
    tool: str | None = None  # answer with a call of this tool (OpenAI format)
    tool_calls: Any = None  # answer with these calls: [{"name", "arguments"}] (OpenAI format)
    tool_call: dict | None = None  # {"name", "arguments": {...}}: this call, OpenAI or Anthropic
    finish: str | None = None  # chat: this finish_reason instead (``content_filter``...)
    refusal: str | None = None  # chat: refuse with this text (``message.refusal``, no content)


DEFAULT = Behaviour()
_SIMPLE = {
    "status": ("status", int),
    "latency": ("latency_ms", float),
    "cut": ("cut", int),
    "latency_ms": ("latency_ms", float),
    "chunk_delay": ("chunk_delay_ms", float),
    "chunk_delay_ms": ("chunk_delay_ms", float),
    "reply": ("reply", str),
    "retry_after": ("retry_after", str),
    "tool_call": ("tool", str),
    "finish_reason": ("finish", str),
    "refusal": ("refusal", str),
}


def apply(b: Behaviour, name: str, value: Any) -> Behaviour:
    """Apply one directive or queue key to a behaviour; invalid values are ignored."""
    try:
        if name == "tool_call" and isinstance(value, dict) and isinstance(value.get("name"), str):
            return replace(b, tool_call=value)  # a queue item's call; `#tool_call:NAME` names one
        if name in _SIMPLE:
            field, convert = _SIMPLE[name]
            return replace(b, **{field: convert(value)})
        if name == "usage":
            parts = value.split(",") if isinstance(value, str) else list(value)
            return replace(b, usage=tuple([*map(int, parts), 0, 0, 0][:3]))
        if name == "error" and isinstance(value, dict):
            return replace(b, error=value)
        if name == "garbage":
            return replace(b, garbage=str(value).lower() in ("1", "true"))
        if name == "tool_calls":
            return replace(b, tool_calls=list(value))
        if name == "words":
            return replace(b, reply=" ".join(f"w{i}" for i in range(1, int(value) + 1)))
    except (TypeError, ValueError):
        pass
    return b


def text_of(content: Any) -> str:
    """Text of a message content: a string or a list of {"type": "text"} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def parse_directives(messages: list) -> Behaviour:
    user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    text = text_of(user[-1].get("content")) if user else ""
    b = DEFAULT
    if "#" in text:
        for name, value in DIRECTIVE_RE.findall(text):
            b = apply(b, name, value.replace("_", " ") if name == "reply" else value)
    return b


def usage_for(b: Behaviour, body: dict) -> Usage:
    if b.usage is not None:
        return b.usage
    chars = sum(
        len(text_of(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict)
    )
    chars += len(text_of(body.get("system")))  # Anthropic keeps the system prompt apart
    return chars // 4 + 1, len(b.reply.split()), 0


def output_limit(body: dict) -> int | None:
    """The most output tokens the request allows (OpenAI or Anthropic field), or None."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def limited(b: Behaviour, body: dict) -> tuple[Behaviour, Usage, bool]:
    """Like a real upstream, stop at the request's output limit: the reply is cut to that many
    words (one word is one token here) and the completion tokens reported never pass it.
    Returns the behaviour with the reply as sent, its usage, and whether the limit stopped it."""
    usage = usage_for(b, body)
    limit = output_limit(body)
    if limit is None:
        return b, usage, False
    words = b.reply.split(" ")
    cut = len(words) > limit
    if cut:
        b = replace(b, reply=" ".join(words[:limit]))
    return b, (usage[0], min(usage[1], limit), usage[2]), cut


def reply_pieces(reply: str) -> list[str]:
    """One piece per word; concatenating the pieces gives back the reply."""
    words = reply.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


class State:
    """Control queue and counters shared by the handlers."""

    def __init__(self) -> None:
        self.script: deque[dict] = deque()
        self.reset()

    def reset(self) -> None:
        self.script.clear()
        self.requests, self.by_path = 0, {}
        self.last_request: Any = None
        self.last_headers: Any = {}
        self.users: dict[str, int] = {}  # requests per `user` field: who the upstream served
        self.models: dict[str, int] = {}  # requests per `model` field: which target was asked
        self.bodies: deque[Any] = deque(maxlen=200)  # the latest request bodies, as received

    def record(self, request: Any, body: Any = None) -> None:
        self.requests += 1
        self.by_path[request.path] = self.by_path.get(request.path, 0) + 1
        self.last_headers = request.headers  # lower-cased only when stats are asked for
        if body is not None:
            self.last_request = body
            self.bodies.append(body)
            user = body.get("user") if isinstance(body, dict) else None
            if isinstance(user, str):
                self.users[user] = self.users.get(user, 0) + 1
            model = body.get("model") if isinstance(body, dict) else None
            if isinstance(model, str):
                self.models[model] = self.models.get(model, 0) + 1

    def behaviour(self, body: dict) -> Behaviour:
        b = parse_directives(body.get("messages") or features.prompt_messages(body))
        for name, value in (self.script.popleft() if self.script else {}).items():
            b = apply(b, name, value)
        return b

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "last_request": self.last_request,
            "last_headers": {k.lower(): v for k, v in self.last_headers.items()},
            "users": dict(self.users),
            "models": dict(self.models),
            "bodies": list(self.bodies),
        }


# ----------------------------------------------------------------------------- payloads

_ids = itertools.count(1)
_chat_cache: dict[tuple, bytes] = {}


def openai_error(status: int, message: str, fields: dict | None = None) -> bytes:
    etype, code = OPENAI_ERRORS.get(status, ("server_error", None))
    error = {"message": message, "type": etype, "param": None, "code": code, **(fields or {})}
    return dumps({"error": error})


def anthropic_error(status: int, message: str, fields: dict | None = None) -> bytes:
    error = {"type": ANTHROPIC_ERRORS.get(status, "api_error"), "message": message}
    return dumps({"type": "error", "error": {**error, **(fields or {})}})


def usage_obj(usage: Usage) -> dict:
    p, c, k = usage
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": k},
    }


def chat_body(model: str, reply: str, usage: Usage, finish: str = "stop") -> bytes:
    """Non-streaming chat.completion: all but id and created is serialised once per variant."""
    rest = _chat_cache.get((model, reply, usage, finish))
    if rest is None:
        if len(_chat_cache) > 4096:
            _chat_cache.clear()
        rest = _chat_cache[(model, reply, usage, finish)] = dumps(
            {
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage_obj(usage),
                "system_fingerprint": None,
            }
        )[1:]
    return (
        b'{"id":"chatcmpl-fake%d","object":"chat.completion","created":%d,'
        % (next(_ids), int(time.time()))
        + rest
    )


def chat_events(body: dict, reply: str, usage: Usage, finish: str = "stop") -> list[bytes]:
    """SSE events of a streamed chat completion, [DONE] included."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "system_fingerprint": None,
        **({"usage": None} if include_usage else {}),
    }
    pieces = reply_pieces(reply)
    deltas = [({"role": "assistant", "content": ""}, None)]
    deltas += [
        ({"content": p}, finish if i == len(pieces) - 1 else None) for i, p in enumerate(pieces)
    ]
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": f}]}
        for d, f in deltas
    ]
    if include_usage:
        events.append({**base, "choices": [], "usage": usage_obj(usage)})
    return [b"data: " + dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def anthropic_message(model: str, content: list, usage: Usage, stop: str | None) -> dict:
    p, c, k = usage
    return {
        "id": f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": p,
            "output_tokens": c,
            "cache_read_input_tokens": k,
            "cache_creation_input_tokens": 0,
        },
    }


def anthropic_events(model: str, reply: str, usage: Usage, stop: str = "end_turn") -> list[bytes]:
    """The Messages API stream for one text block, as Anthropic sends it."""
    start = anthropic_message(
        model, [], (usage[0], 1, usage[2]), None
    )  # output_tokens 1, like Anthropic
    events = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in reply_pieces(reply)
    ]
    events += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": usage[1]},
        },
        {"type": "message_stop"},
    ]
    return [b"event: %s\ndata: %s\n\n" % (e["type"].encode(), dumps(e)) for e in events]


def forced_tool(body: dict) -> dict | None:
    """The tool an Anthropic ``tool_choice`` of type ``tool`` makes the model call."""
    choice = body.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "tool":
        return None
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    return next((t for t in tools if t.get("name") == choice.get("name")), None)


def tool_call_answer(body: dict, call: dict, usage: Usage, anthropic: bool) -> list[bytes]:
    """A scripted tool call (queue key ``tool_call``): the plain answer (one item), or the
    stream's events, its arguments sent in two pieces; OpenAI's format or Anthropic's."""
    model = body.get("model", "fake-model")
    n = next(_ids)
    args = dumps(call.get("arguments") or {}).decode()
    pieces = [args[: len(args) // 2], args[len(args) // 2 :]]
    if anthropic:
        block = {"type": "tool_use", "id": f"toolu_fake{n}", "name": call["name"]}
        if not body.get("stream"):
            content = [{**block, "input": call.get("arguments") or {}}]
            return [dumps(anthropic_message(model, content, usage, "tool_use"))]
        events = [
            {"type": "message_start", "message": anthropic_message(model, [], usage, None)},
            {"type": "content_block_start", "index": 0, "content_block": {**block, "input": {}}},
            *(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                }
                for p in pieces
            ),
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": usage[1]},
            },
            {"type": "message_stop"},
        ]
        return [b"event: %s\ndata: %s\n\n" % (e["type"].encode(), dumps(e)) for e in events]
    function = {"name": call["name"], "arguments": args}
    tool = {"id": f"call_fake{n}", "type": "function", "function": function}
    base = {"id": f"chatcmpl-fake{n}", "created": int(time.time()), "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": None, "tool_calls": [tool]}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        doc = {**base, "object": "chat.completion", "choices": [choice], "usage": usage_obj(usage)}
        return [dumps(doc)]
    deltas = [
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{**tool, "index": 0, "function": {**function, "arguments": ""}}],
            },
            None,
        ),
        *(({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}, None) for p in pieces),
        ({}, "tool_calls"),
    ]
    events = [
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "finish_reason": f}],
        }
        for d, f in deltas
    ]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(
            {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage_obj(usage)}
        )
    return [b"data: " + dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def embed(text: str, as_base64: bool) -> list[float] | str:
    """Deterministic 8-dim vector in [-1, 1) from a hash of the text."""
    vec = [v / 2**31 - 1.0 for v in struct.unpack("<8I", hashlib.sha256(text.encode()).digest())]
    return base64.b64encode(struct.pack("<8f", *vec)).decode() if as_base64 else vec


# ----------------------------------------------------------------------------- server


def abort_connection(request: Any) -> None:
    """Close the connection with no (further) response bytes."""
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError  # aiohttp treats this as a client disconnect, quietly


def build_app() -> Any:
    from aiohttp import web

    state = State()

    def json_response(body: bytes, status: int = 200, retry_after: str | None = None) -> Any:
        # rate limits and overloads may say when to come back, as the real APIs do
        wait = retry_after is not None and status in (429, 503, 529)
        headers = {"Retry-After": retry_after} if wait else None
        return web.Response(
            body=body, status=status, content_type="application/json", headers=headers
        )

    async def read_json(request: Any) -> dict | None:
        try:
            body = loads(await request.read())
        except ValueError:
            body = None
        state.record(request, body)
        return body if isinstance(body, dict) else None

    async def prelude(request: Any, error: Any) -> tuple[dict, Behaviour, Any]:
        """Shared start of chat and messages: parse, pick the behaviour, sleep, maybe fail."""
        body = await read_json(request)
        if body is None:
            return {}, DEFAULT, json_response(error(400, "Request body must be a JSON object"), 400)
        b = state.behaviour(body)
        if b.latency_ms:
            await asyncio.sleep(b.latency_ms / 1000)
        if b.status >= 400:
            message = f"Scripted error {b.status} from fake upstream"
            raw = error(b.status, message, b.error)
            return body, b, json_response(raw, b.status, b.retry_after)
        if b.cut is not None and not body.get("stream"):
            abort_connection(request)
        if b.garbage and not body.get("stream"):
            return body, b, json_response(b'{"id": "chatcmpl-broken", "choi')
        return body, b, None

    async def stream(request: Any, events: list[bytes], b: Behaviour) -> Any:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        for i, event in enumerate(events):
            if b.cut is not None and i >= b.cut:
                abort_connection(request)
            if b.chunk_delay_ms and i:
                await asyncio.sleep(b.chunk_delay_ms / 1000)
            await resp.write(event)
        await resp.write_eof()
        return resp

    async def chat_completions(request: Any) -> Any:
        body, b, failure = await prelude(request, openai_error)
        if failure is not None:
            return failure
        if b.tool_call is not None:  # a scripted call, whatever the request asked
            b, usage, _ = limited(b, body)
            answer = tool_call_answer(body, b.tool_call, usage, anthropic=False)
            if body.get("stream"):
                return await stream(request, answer, b)
            return json_response(answer[0])
        if features.needs_features(body, b.tool or b.tool_calls):
            return await featured_chat(request, body, b)
        model = body.get("model", "fake-model")
        b, usage, cut = limited(b, body)
        finish = b.finish or ("length" if cut else "stop")
        if b.refusal is not None:
            return await refused(request, body, b, usage)
        if body.get("stream"):
            return await stream(request, chat_events(body, b.reply, usage, finish), b)
        return json_response(chat_body(model, b.reply, usage, finish))

    async def refused(request: Any, body: dict, b: Behaviour, usage: Usage) -> Any:
        """A refusal, as OpenAI sends one: ``refusal`` set, no content."""
        assert b.refusal is not None
        head = {"id": f"chatcmpl-fake{next(_ids)}", "created": int(time.time())}
        head["model"] = body.get("model", "fake-model")
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "refusal": b.refusal}
            choice = {"index": 0, "message": message, "finish_reason": b.finish or "stop"}
            doc = {**head, "object": "chat.completion", "choices": [choice]}
            return json_response(dumps({**doc, "usage": usage_obj(usage)}))
        deltas = [({"role": "assistant", "refusal": ""}, None), ({"refusal": b.refusal}, None)]
        deltas.append(({}, b.finish or "stop"))
        events = [
            {**head, "object": "chat.completion.chunk", "choices": [choice]}
            for choice in ({"index": 0, "delta": d, "finish_reason": f} for d, f in deltas)
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**head, "object": "chat.completion.chunk", "choices": []})
            events[-1]["usage"] = usage_obj(usage)
        out = [b"data: " + dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]
        return await stream(request, out, b)

    async def featured_chat(request: Any, body: dict, b: Behaviour) -> Any:
        """Tool calls, `n` choices, logprobs, JSON answers (openai_features.py)."""
        calls = features.tool_calls(body, b.tool, b.tool_calls)
        after_tool = features.tool_result_reply(body)
        if after_tool is not None and b.reply == DEFAULT_REPLY:
            b = replace(b, reply=after_tool)
        as_json = features.json_reply(body, b.reply)
        if as_json is not None:
            b = replace(b, reply=as_json)
        n = features.choice_count(body)
        cut = False
        if not calls:
            b, _, cut = limited(b, body)
        prompt, _, cached = usage_for(b, body)
        finish = "tool_calls" if calls else "length" if cut else "stop"
        answer = features.Answer(reply=b.reply, calls=calls, finish=finish, n=n)
        usage = b.usage or features.answer_usage(answer, prompt, cached, output_limit(body))
        pieces = reply_pieces(b.reply)
        if body.get("stream"):
            return await stream(request, features.chat_stream(body, answer, usage, pieces), b)
        return json_response(features.chat_document(body, answer, usage, pieces))

    async def completions(request: Any) -> Any:
        """Legacy text completions: `prompt` in, `text` out, one choice per prompt and `n`."""
        body, b, failure = await prelude(request, openai_error)
        if failure is not None:
            return failure
        if "prompt" not in body:
            return json_response(openai_error(400, "'prompt' is required"), 400)
        b, _, cut = limited(b, body)
        count = len(features.prompts(body)) * features.choice_count(body)
        usage = b.usage or (features.text_prompt_tokens(body), len(b.reply.split()) * count, 0)
        finish = "length" if cut else "stop"
        if body.get("stream"):
            return await stream(request, features.text_stream(body, b.reply, usage, finish), b)
        return json_response(features.text_document(body, b.reply, usage, finish))

    async def messages(request: Any) -> Any:
        body, b, failure = await prelude(request, anthropic_error)
        if failure is not None:
            return failure
        model = body.get("model", "fake-model")
        b, usage, cut = limited(b, body)
        stop = "max_tokens" if cut else "end_turn"
        forced = forced_tool(body)
        if b.tool_call is None and forced is not None:  # as Anthropic does: a call of that tool
            arguments = features.minimal_instance(forced.get("input_schema") or {})
            b = replace(b, tool_call={"name": forced["name"], "arguments": arguments})
        if b.tool_call is not None:
            answer = tool_call_answer(body, b.tool_call, usage, anthropic=True)
            if body.get("stream"):
                return await stream(request, answer, b)
            return json_response(answer[0])
        if body.get("stream"):
            return await stream(request, anthropic_events(model, b.reply, usage, stop), b)
        content = [{"type": "text", "text": b.reply}]
        return json_response(dumps(anthropic_message(model, content, usage, stop)))

    async def embeddings(request: Any) -> Any:
        body = await read_json(request)
        if body is None or "input" not in body:
            return json_response(openai_error(400, "'input' is required"), 400)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and isinstance(inputs[0], int):  # one list of token ids
            inputs = [inputs]
        b64 = body.get("encoding_format") == "base64"
        tokens = sum(len(str(x)) for x in inputs) // 4 + 1
        return json_response(
            dumps(
                {
                    "object": "list",
                    "model": body.get("model", "fake-model"),
                    "data": [
                        {"object": "embedding", "index": i, "embedding": embed(str(x), b64)}
                        for i, x in enumerate(inputs)
                    ],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            )
        )

    async def models(request: Any) -> Any:
        state.record(request)
        return json_response(MODELS_BODY)

    async def control_script(request: Any) -> Any:
        payload = loads(await request.read() or b"{}")
        items = payload.get("responses", []) if isinstance(payload, dict) else []
        state.script.extend(i for i in items if isinstance(i, dict))
        return json_response(dumps({"queued": len(state.script)}))

    async def control_reset(request: Any) -> Any:
        state.reset()
        return json_response(b'{"ok":true}')

    async def control_stats(request: Any) -> Any:
        return json_response(dumps(state.stats()))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/v1/chat/completions", chat_completions),
            web.post("/v1/completions", completions),
            web.post("/v1/messages", messages),
            web.post("/v1/embeddings", embeddings),
            web.get("/v1/models", models),
            web.post("/_control/script", control_script),
            web.post("/_control/reset", control_reset),
            web.get("/_control/stats", control_stats),
        ]
    )
    return app


async def serve(host: str, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    await web.SockSite(runner, sock, backlog=4096).start()
    shown = f"[{host}]" if ":" in host else host
    print(f"READY http://{shown}:{sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port))


# ----------------------------------------------------------------------------- test helper


class UpstreamProcess(ServerProcess):
    """Runs the fake upstream in a subprocess for the duration of a `with` block.

    with UpstreamProcess() as up:
        up.control("script", {"responses": [{"status": 503}, {"status": 200}]})
        client = OpenAI(base_url=up.base_url, api_key="test")
    """

    name = "fake upstream"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 15.0) -> None:
        super().__init__(timeout=timeout)
        self.host, self.port = host, port

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    def control(self, path: str, payload: Any = None) -> Any:
        """Calls the control API ("script", "reset", "stats" or "/_control/..."); returns its JSON.

        GET for "stats" without a payload, POST otherwise."""
        name = path.strip("/").removeprefix("_control/")
        get = name == "stats" and payload is None
        data = None if get else json.dumps(payload if payload is not None else {}).encode()
        url = f"{self.url}/_control/{name}"
        req = urllib.request.Request(url, data=data, method="GET" if get else "POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def script(self, *responses: dict) -> Any:
        return self.control("script", {"responses": list(responses)})

    def reset(self) -> Any:
        return self.control("reset")

    def stats(self) -> dict:
        return self.control("stats")


if __name__ == "__main__":
    main()
