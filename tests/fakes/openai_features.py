"""What the fake upstream answers beyond one plain text choice, in OpenAI's wire format.

Clients are tested for real only if the upstream behind the gateway does what they ask: a tool
call when tools are offered (plain, or streamed as argument deltas), ``n`` choices, a logprobs
object per token when ``logprobs`` is asked, a valid JSON document when ``response_format`` asks
for ``json_object`` or a ``json_schema`` (a minimal instance of the schema), and the legacy
``/v1/completions`` endpoint. Pure functions over the request body, the reply text and the usage;
``upstream.py`` calls them and keeps its fast path for the plain answer. See README.md.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

Usage = tuple[int, int, int]  # (prompt, completion, cached), as in upstream.py
TOOL_RESULT_REPLY = "The tool answered: {}"


# ----------------------------------------------------------------------------- what is asked


def needs_features(body: dict[str, Any], tool: str | None) -> bool:
    """Does the chat request ask for more than the plain single-choice answer?"""
    n = body.get("n")
    return bool(
        (isinstance(n, int) and n > 1)
        or body.get("logprobs")
        or body.get("response_format")
        or body.get("tools")
        or tool
        or last_role(body) == "tool"
    )


def last_role(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    return last.get("role") if isinstance(last, dict) else None


def choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1


def prompt_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A legacy completion's prompt as the one user message directives are read from."""
    prompt = body.get("prompt")
    texts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []
    text = " ".join(t for t in texts if isinstance(t, str))
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------- JSON answers


def minimal_instance(schema: Any, root: Any = None) -> Any:
    """The smallest value the JSON schema accepts (as far as the usual keywords go): required
    properties only, empty strings padded to ``minLength``, the first ``enum``/``anyOf``."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return minimal_instance(target, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return minimal_instance(schema[key][0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {
            name: minimal_instance(props.get(name, {}), root)
            for name in schema.get("required") or []
        }
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [minimal_instance(schema.get("items") or {}, root) for _ in range(count)]
    if kind == "string":
        return "x" * int(schema.get("minLength") or 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(0, low + (1 if "exclusiveMinimum" in schema else 0))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


def json_reply(body: dict[str, Any], reply: str) -> str | None:
    """The JSON text ``response_format`` asks for, or None when it asks for none."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return json.dumps({"reply": reply})
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return json.dumps(minimal_instance(schema or {"type": "object"}))
    return None


# ----------------------------------------------------------------------------- tool calls


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


def _function(tool: Any) -> dict[str, Any]:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return fn if isinstance(fn, dict) else {}


def tool_calls(body: dict[str, Any], wanted: str | None, scripted: Any) -> list[ToolCall]:
    """The calls to answer with: a ``tool_calls`` queue item (``[{"name", "arguments"}]``), else
    the tool a ``#tool_call:NAME`` directive or ``tool_choice`` names (``required``: the first),
    its arguments a minimal instance of its parameters. None after a tool's result (the round
    trip is over) or with ``tool_choice: "none"``."""
    if last_role(body) == "tool" or body.get("tool_choice") == "none":
        return []
    tools = [_function(t) for t in body.get("tools") or []]
    seed = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()
    if isinstance(scripted, list) and scripted:
        return [
            ToolCall(
                id=f"call_{seed[:12]}{i}",
                name=str(c.get("name")),
                arguments=c["arguments"]
                if isinstance(c.get("arguments"), str)
                else json.dumps(c.get("arguments") or {}),
            )
            for i, c in enumerate(scripted)
            if isinstance(c, dict)
        ]
    choice = body.get("tool_choice")
    named = _function(choice).get("name") if isinstance(choice, dict) else None
    name = wanted or named or (tools[0].get("name") if choice == "required" and tools else None)
    if not name:
        return []
    fn = next((t for t in tools if t.get("name") == name), {})
    arguments = json.dumps(minimal_instance(fn.get("parameters") or {"type": "object"}))
    return [ToolCall(id=f"call_{seed[:12]}0", name=str(name), arguments=arguments)]


def tool_result_reply(body: dict[str, Any]) -> str | None:
    """After a tool's result, the answer quotes it (what a round trip test checks)."""
    if last_role(body) != "tool":
        return None
    content = body["messages"][-1].get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return TOOL_RESULT_REPLY.format(content)


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


# ----------------------------------------------------------------------------- logprobs


def _logprob(i: int) -> float:
    return round(-0.01 - 0.1 * (i % 7), 4)


def token_logprobs(pieces: list[str], top: int) -> list[dict[str, Any]]:
    """Chat logprobs' ``content``: one entry per token (a piece), ``top`` alternatives each."""
    out = []
    for i, piece in enumerate(pieces):
        alternatives = [(piece, _logprob(i))] + [
            (f"alt{j}", _logprob(i) - j) for j in range(1, top)
        ]
        out.append(
            {
                "token": piece,
                "logprob": _logprob(i),
                "bytes": list(piece.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())}
                    for t, lp in alternatives[:top]
                ],
            }
        )
    return out


def chat_logprobs(body: dict[str, Any], pieces: list[str]) -> dict[str, Any] | None:
    if not body.get("logprobs"):
        return None
    top = body.get("top_logprobs")
    top = top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 0
    return {"content": token_logprobs(pieces, top), "refusal": None}


def text_logprobs(body: dict[str, Any], pieces: list[str], offset: int) -> dict[str, Any] | None:
    """Legacy completions' logprobs: tokens, their logprobs, the top ones, text offsets."""
    top = body.get("logprobs")
    if not isinstance(top, int) or isinstance(top, bool) or top < 0:
        return None
    offsets, at = [], offset
    for piece in pieces:
        offsets.append(at)
        at += len(piece)
    return {
        "tokens": pieces,
        "token_logprobs": [_logprob(i) for i in range(len(pieces))],
        "top_logprobs": [
            {p: _logprob(i), **{f"alt{j}": _logprob(i) - j for j in range(1, top)}}
            for i, p in enumerate(pieces)
        ]
        if top
        else None,
        "text_offset": offsets,
    }


# ----------------------------------------------------------------------------- bodies


def usage_obj(usage: Usage) -> dict[str, Any]:
    p, c, k = usage
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": k},
    }


@dataclass(frozen=True)
class Answer:
    """One chat request's answer: each choice's text (or tool calls) and why it stopped."""

    reply: str
    calls: list[ToolCall]
    finish: str
    n: int


def answer_usage(answer: Answer, prompt_tokens: int, cached: int, limit: int | None) -> Usage:
    words = sum(len(c.arguments.split()) for c in answer.calls) or len(answer.reply.split())
    each = min(words, limit) if limit else words
    return prompt_tokens, each * answer.n, cached


def chat_document(body: dict[str, Any], answer: Answer, usage: Usage, pieces: list[str]) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": answer.reply, "refusal": None}
    if answer.calls:
        message = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [tool_call_json(c) for c in answer.calls],
        }
    choices = [
        {
            "index": i,
            "message": message,
            "logprobs": None if answer.calls else chat_logprobs(body, pieces),
            "finish_reason": answer.finish,
        }
        for i in range(answer.n)
    ]
    return json.dumps(
        {
            "id": f"chatcmpl-fake{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": choices,
            "usage": usage_obj(usage),
            "system_fingerprint": None,
        }
    ).encode()


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _tool_deltas(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """The deltas of streamed tool calls: each call's name first, then its arguments in
    pieces, as OpenAI streams them."""
    deltas: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        opening = {
            "index": i,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        head = {"role": "assistant", "content": None} if i == 0 else {}
        deltas.append({**head, "tool_calls": [opening]})
        step = max(1, len(call.arguments) // 3)
        for at in range(0, len(call.arguments), step):
            piece = call.arguments[at : at + step]
            deltas.append({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    return deltas


def chat_stream(
    body: dict[str, Any], answer: Answer, usage: Usage, pieces: list[str]
) -> list[bytes]:
    """SSE events of a streamed chat answer with tool calls, ``n`` choices or logprobs."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": f"chatcmpl-fake{time.time_ns()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "system_fingerprint": None,
        **({"usage": None} if include_usage else {}),
    }
    events = []
    if answer.calls:
        steps = [(d, None) for d in _tool_deltas(answer.calls)]
    else:
        steps = [({"role": "assistant", "content": ""}, None)]
        logprobs = chat_logprobs(body, pieces)
        for j, piece in enumerate(pieces):
            lp = {"content": logprobs["content"][j : j + 1], "refusal": None} if logprobs else None
            steps.append(({"content": piece}, lp))
    for delta, lp in steps:
        choices = [
            {"index": i, "delta": delta, "logprobs": lp, "finish_reason": None}
            for i in range(answer.n)
        ]
        events.append({**base, "choices": choices})
    done = [
        {"index": i, "delta": {}, "logprobs": None, "finish_reason": answer.finish}
        for i in range(answer.n)
    ]
    events.append({**base, "choices": done})
    if include_usage:
        events.append({**base, "choices": [], "usage": usage_obj(usage)})
    return [_sse(e) for e in events] + [b"data: [DONE]\n\n"]


# ----------------------------------------------------------------------------- legacy completions


def prompts(body: dict[str, Any]) -> list[str]:
    """The prompts of a legacy completion (token arrays shown as their ids)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
        return [" ".join(map(str, prompt))]
    if isinstance(prompt, list):
        return [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt]
    return [""]


def text_choices(
    body: dict[str, Any], reply: str, pieces: list[str], finish: str
) -> list[dict[str, Any]]:
    """``n`` choices per prompt, in OpenAI's order (prompt by prompt)."""
    out = []
    for p in prompts(body):
        echo = p if body.get("echo") is True else ""
        for _ in range(choice_count(body)):
            out.append(
                {
                    "text": echo + reply,
                    "index": len(out),
                    "logprobs": text_logprobs(body, pieces, len(echo)),
                    "finish_reason": finish,
                }
            )
    return out


def text_prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(p) for p in prompts(body)) // 4 + 1


def text_document(body: dict[str, Any], reply: str, usage: Usage, finish: str) -> bytes:
    pieces = reply_words(reply)
    return json.dumps(
        {
            "id": f"cmpl-fake{time.time_ns()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": text_choices(body, reply, pieces, finish),
            "usage": usage_obj(usage),
            "system_fingerprint": None,
        }
    ).encode()


def text_stream(body: dict[str, Any], reply: str, usage: Usage, finish: str) -> list[bytes]:
    """SSE ``text_completion`` chunks: the echo, then one chunk per word and choice, then each
    choice's finish; the usage chunk when asked; ``[DONE]``."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": f"cmpl-fake{time.time_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "fake-model"),
        "system_fingerprint": None,
    }
    pieces = reply_words(reply)
    events = []
    for choice in text_choices(body, reply, pieces, finish):
        i = choice["index"]
        echo = choice["text"][: len(choice["text"]) - len(reply)]
        texts = ([echo] if echo else []) + pieces
        for j, text in enumerate(texts):
            lp = text_logprobs(body, [text], 0) if j >= len(texts) - len(pieces) else None
            events.append(
                {
                    **base,
                    "choices": [{"text": text, "index": i, "logprobs": lp, "finish_reason": None}],
                }
            )
        events.append(
            {
                **base,
                "choices": [{"text": "", "index": i, "logprobs": None, "finish_reason": finish}],
            }
        )
    if include_usage:
        events.append({**base, "choices": [], "usage": usage_obj(usage)})
    return [_sse(e) for e in events] + [b"data: [DONE]\n\n"]


def reply_words(reply: str) -> list[str]:
    """One piece per word; concatenated, the reply (as ``upstream.reply_pieces``)."""
    words = reply.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]
