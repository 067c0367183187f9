"""A chat completion in its two forms: one ``chat.completion`` document, or a stream of chunks.

The answer cache keeps an answer in the form it came in and serves it in the form the next client
asks for, so each form is rebuilt from the other here, as pure functions over OpenAI's wire
format: ``gather`` folds ``chat.completion.chunk`` payloads back into the document (every choice,
by its index: text, refusal, tool calls routed by their own index with their arguments joined,
log probabilities, the finish reason, the usage), and ``chunks_of`` tells a document as a stream
(for each choice a chunk with the whole message and one with its finish reason, then the usage
chunk when the client asked for it: an answer that never streamed has no events to replay).
``unfinished`` (``stream_unfinished`` for a stream, reading only the events that end a choice)
says why an answer must not be kept: an answer is complete only if every choice
ended of its own accord (``stop``, ``tool_calls``, ``function_call``; ``length`` only where the
caller says the output limit was the client's own) and none is a refusal.
"""

from __future__ import annotations

from typing import Any

import orjson

COMPLETE_FINISHES = frozenset({"stop", "tool_calls", "function_call"})
HEAD_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


def _finish_problem(finish: Any, length_is_complete: bool) -> str | None:
    if finish == "length":
        return None if length_is_complete else "cut by an output limit the client did not set"
    return None if finish in COMPLETE_FINISHES else f"finish_reason {finish!r}"


def unfinished(completion: dict[str, Any], *, length_is_complete: bool) -> str | None:
    """Why this answer is not a complete, successful one (None when it is)."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    for choice in choices:
        if not isinstance(choice, dict):
            return "a choice that is not an object"
        problem = _finish_problem(choice.get("finish_reason"), length_is_complete)
        if problem is not None:
            return problem
        message = choice.get("message")
        if isinstance(message, dict) and message.get("refusal"):
            return "a refusal"
    return None


FINISH, NULL_FINISH = b'"finish_reason"', b'"finish_reason":null'
REFUSAL = b'"refusal"'


def stream_unfinished(events: list[bytes], *, choices: int, length_is_complete: bool) -> str | None:
    """``unfinished`` for a stream's chunk payloads, without gathering them: the stream's last
    events are read back until every one of the ``choices`` asked for has ended (an event whose
    every ``finish_reason`` is a literal null, as OpenAI writes it, is skipped unread), and the
    events that mention a refusal are read for one. A key is found in the bytes only as a key
    (inside a string its quotes are escaped), so nothing else needs reading."""
    if REFUSAL in b"".join(events):
        for raw in events:
            doc = _doc(raw) if REFUSAL in raw else {}
            for choice in doc.get("choices") or [] if isinstance(doc, dict) else []:
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict) and delta.get("refusal"):
                    return "a refusal"
    finishes: dict[Any, Any] = {}
    for raw in reversed(events):
        if raw.count(FINISH) == raw.count(NULL_FINISH):
            continue
        doc = _doc(raw)
        if not isinstance(doc, dict):
            return "an event that is not a JSON object"
        for choice in doc.get("choices") or []:
            if isinstance(choice, dict) and choice.get("finish_reason") is not None:
                finishes.setdefault(choice.get("index", 0), choice["finish_reason"])
        if all(i in finishes for i in range(choices)):
            break
    if not finishes or any(i not in finishes for i in range(choices)):
        return "a choice that never ended"
    for finish in finishes.values():
        problem = _finish_problem(finish, length_is_complete)
        if problem is not None:
            return problem
    return None


def _doc(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


class _Choice:
    __slots__ = ("content", "finish", "function", "logprobs", "refusal", "role", "tools")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.function: dict[str, str] | None = None
        self.logprobs: dict[str, list[Any]] | None = None
        self.finish: Any = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for tc in delta.get("tool_calls") or []:
            if isinstance(tc, dict):
                self._tool(tc)
        fc = delta.get("function_call")
        if isinstance(fc, dict):
            self.function = self.function or {"name": "", "arguments": ""}
            self.function["name"] += str(fc.get("name") or "")
            self.function["arguments"] += str(fc.get("arguments") or "")
        lp = choice.get("logprobs")
        if isinstance(lp, dict):
            self.logprobs = self.logprobs or {}
            for part in ("content", "refusal"):
                if isinstance(lp.get(part), list):
                    self.logprobs.setdefault(part, []).extend(lp[part])
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]

    def _tool(self, tc: dict[str, Any]) -> None:
        index = tc.get("index")
        index = index if isinstance(index, int) else len(self.tools)
        call = self.tools.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if tc.get("id"):
            call["id"] = str(tc["id"])
        if tc.get("type"):
            call["type"] = str(tc["type"])
        fn = tc.get("function")
        if isinstance(fn, dict):
            call["function"]["name"] += str(fn.get("name") or "")
            call["function"]["arguments"] += str(fn.get("arguments") or "")

    def document(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.content or not self.tools else None,
            "refusal": "".join(self.refusal) or None,
        }
        if self.tools:
            message["tool_calls"] = [self.tools[i] for i in sorted(self.tools)]
        if self.function is not None:
            message["function_call"] = self.function
        logprobs = None
        if self.logprobs is not None:
            logprobs = {"content": None, "refusal": None, **self.logprobs}
        return {
            "index": index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": self.finish,
        }


def gather(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` document a stream of chunks tells."""
    head: dict[str, Any] = {}
    choices: dict[int, _Choice] = {}
    usage = None
    for chunk in chunks:
        for name in HEAD_FIELDS:
            if name not in head and chunk.get(name) is not None:
                head[name] = chunk[name]
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict):
                index = choice.get("index")
                index = index if isinstance(index, int) else 0
                choices.setdefault(index, _Choice()).add(choice)
    return {
        "id": head.get("id", ""),
        "object": "chat.completion",
        "created": head.get("created", 0),
        "model": head.get("model", ""),
        "choices": [choices[i].document(i) for i in sorted(choices)],
        "usage": usage,
        "system_fingerprint": head.get("system_fingerprint"),
        **({"service_tier": head["service_tier"]} if "service_tier" in head else {}),
    }


def chunks_of(completion: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """A ``chat.completion`` document told as the stream of chunks a client reads: the usage
    chunk last, and only when ``include_usage`` (each other chunk then has ``"usage": null``,
    as OpenAI sends them)."""
    base: dict[str, Any] = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
        "system_fingerprint": completion.get("system_fingerprint"),
    }
    if "service_tier" in completion:
        base["service_tier"] = completion["service_tier"]
    if include_usage:
        base["usage"] = None
    out: list[dict[str, Any]] = []
    for choice in completion.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        delta: dict[str, Any] = {"role": message.get("role", "assistant")}
        delta["content"] = message.get("content")
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        if isinstance(message.get("tool_calls"), list):
            delta["tool_calls"] = [
                {"index": i, **call} for i, call in enumerate(message["tool_calls"])
            ]
        if isinstance(message.get("function_call"), dict):
            delta["function_call"] = message["function_call"]
        first = {"index": index, "delta": delta, "logprobs": choice.get("logprobs")}
        out.append({**base, "choices": [{**first, "finish_reason": None}]})
        last = {"index": index, "delta": {}, "logprobs": None}
        out.append({**base, "choices": [{**last, "finish_reason": choice.get("finish_reason")}]})
    if include_usage:
        out.append({**base, "choices": [], "usage": completion.get("usage")})
    return out
