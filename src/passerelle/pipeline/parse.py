"""Parsing: the JSON body into the fields the pipeline needs, with OpenAI-style 400s.

Only what the gateway acts on is checked (types, ranges, shape of messages); everything else is
passed to the upstream untouched, so new OpenAI fields work without a release. Each failure names
the offending ``param`` the way OpenAI does (``messages[2].role``).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from passerelle.errors import InvalidRequestError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
FEATURE_HEADER = "X-Passerelle-Feature"
FEATURE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")


def bad(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def load_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise bad("request body is empty; send a JSON object", None, "invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad("request body is not valid JSON", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object", None, "invalid_json")
    return body


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise bad("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise bad("model must be a non-empty string", "model", "invalid_type")
    return model


def check_messages(messages: object) -> None:
    if messages is None:
        raise bad("messages is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty array", "messages", "invalid_type")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}] must be an object", f"messages[{i}]", "invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise bad(
                f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}",
                f"messages[{i}].role",
            )
        content = m.get("content")
        if content is None:
            if role == "assistant" and (m.get("tool_calls") or m.get("function_call")):
                continue
            raise bad(
                f"messages[{i}].content is required",
                f"messages[{i}].content",
                "missing_required_parameter",
            )
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise bad(
                        f"messages[{i}].content[{j}] must be an object with a type",
                        f"messages[{i}].content[{j}]",
                        "invalid_type",
                    )
        elif not isinstance(content, str):
            raise bad(
                f"messages[{i}].content must be a string or an array",
                f"messages[{i}].content",
                "invalid_type",
            )


def _check_numbers(body: dict[str, Any]) -> int | None:
    max_tokens = None
    for name in ("max_tokens", "max_completion_tokens"):
        v = body.get(name)
        if v is None:
            continue
        if not _is_int(v) or v < 1:
            raise bad(f"{name} must be an integer of at least 1", name)
        max_tokens = v
    for name, lo, hi in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        v = body.get(name)
        if v is not None and (not _is_number(v) or not lo <= v <= hi):
            raise bad(f"{name} must be a number between {lo} and {hi}", name)
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= 128):
        raise bad("n must be an integer between 1 and 128", "n")
    return max_tokens


def feature_of(call: Call, body: dict[str, Any]) -> str | None:
    feature = call.headers.get(FEATURE_HEADER)
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise bad("metadata must be an object", "metadata", "invalid_type")
    if feature is None and meta is not None and "feature" in meta:
        feature = meta.get("feature")
        if not isinstance(feature, str):
            raise bad("metadata.feature must be a string", "metadata.feature", "invalid_type")
    if meta is not None and "feature" in meta:
        # a gateway field: the upstream never sees it
        rest = {k: v for k, v in meta.items() if k != "feature"}
        if rest:
            body["metadata"] = rest
        else:
            del body["metadata"]
    if feature is not None and not FEATURE_RE.match(feature):
        raise bad("feature must be 1-64 characters of letters, digits and _ . : / -", "feature")
    return feature


def parse_chat(call: Call) -> None:
    body = load_json_object(call.raw_body)
    call.model = require_model(body)
    check_messages(body.get("messages"))
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad("stream must be a boolean", "stream", "invalid_type")
    call.stream = bool(stream)
    opts = body.get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise bad("stream_options must be an object", "stream_options", "invalid_type")
        if not call.stream:
            raise bad("stream_options is only allowed with stream: true", "stream_options")
        inc = opts.get("include_usage", False)
        if not isinstance(inc, bool):
            raise bad(
                "stream_options.include_usage must be a boolean",
                "stream_options.include_usage",
                "invalid_type",
            )
        call.include_usage = inc
    call.max_tokens = _check_numbers(body)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad("user must be a string", "user", "invalid_type")
    call.user = user
    call.feature = feature_of(call, body)
    call.body = body


def parse_embeddings(call: Call) -> None:
    body = load_json_object(call.raw_body)
    call.model = require_model(body)
    inp = body.get("input")
    if inp is None:
        raise bad("input is required", "input", "missing_required_parameter")
    ok = isinstance(inp, str) or (
        isinstance(inp, list)
        and inp
        and (
            all(isinstance(x, str) for x in inp)
            or all(_is_int(x) for x in inp)
            or all(isinstance(x, list) and all(_is_int(y) for y in x) for x in inp)
        )
    )
    if not ok:
        raise bad(
            "input must be a string, an array of strings or an array of token arrays",
            "input",
            "invalid_type",
        )
    user = body.get("user")
    call.user = user if isinstance(user, str) else None
    call.feature = feature_of(call, body)
    call.body = body


class Parse:
    async def __call__(self, call: Call, next: Next) -> None:
        if call.endpoint == "embeddings":
            parse_embeddings(call)
        else:
            parse_chat(call)
        await next(call)
