"""Parsing: the JSON body into the fields the pipeline needs, with OpenAI-style 400s.

A client speaking another dialect (``call.dialect``) has its body translated to a chat body
first, and that is what is checked and what the pipeline works on (``parse_dialect``).

Only what the gateway acts on is checked (types, ranges, shape of messages); everything else is
passed to the upstream untouched, so new OpenAI fields work without a release. Each failure names
the offending ``param`` the way OpenAI does (``messages[2].role``).

Two checks guard the gateway itself rather than the upstream's contract. JSON nested deeper than
``MAX_JSON_DEPTH`` is refused here, so nothing later (the token estimate, orjson's dump, which
stops at 255 levels) can fail on it. The text fields the gateway stores in its ledger (``user``,
``model``; ``feature`` has its own pattern) are bounded in length and may hold no control
character: a NUL is refused here, before the upstream is paid, not left to the database.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from passerelle.errors import InvalidRequestError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.pipeline.dialect import DialectAnswer
from passerelle.protocol.base import OPENAI

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
FEATURE_HEADER = "X-Passerelle-Feature"
FEATURE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")
MAX_JSON_DEPTH = 64  # arrays and objects, the body itself counting as 1
MAX_STORED_TEXT = 256  # characters of ``user`` and ``model``
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


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
    # a body with few brackets cannot be deep (brackets inside strings only overcount): the common
    # case costs two C-level scans of the bytes and no walk
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        too_deep = deepest_field(body, MAX_JSON_DEPTH)
        if too_deep is not None:
            raise bad(
                f"{too_deep} is nested too deep: at most {MAX_JSON_DEPTH} levels of arrays and "
                "objects are accepted",
                too_deep,
                "invalid_json",
            )
    return body


def deepest_field(body: dict[str, Any], limit: int) -> str | None:
    """The top-level field whose value nests arrays and objects past ``limit`` (the body is level
    1), or None. Iterative, one level at a time: no input can exhaust the interpreter's stack, and
    a too-deep value is found after at most ``limit`` levels."""
    for name, value in body.items():
        level = [value] if type(value) is dict or type(value) is list else []
        depth = 2
        while level:
            if depth > limit:  # a field name is echoed and logged: never a client's odd key
                return name if FIELD_NAME_RE.fullmatch(name) else "body"
            below = []
            for node in level:
                for child in node.values() if type(node) is dict else node:
                    if type(child) is dict or type(child) is list:
                        below.append(child)
            level = below
            depth += 1
    return None


def stored_text(value: object, param: str) -> str | None:
    """A text field the ledger keeps: a string, bounded, without control characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"{param} must be a string", param, "invalid_type")
    if len(value) > MAX_STORED_TEXT:
        raise bad(
            f"{param} must be at most {MAX_STORED_TEXT} characters",
            param,
            "string_above_max_length",
        )
    if CONTROL_RE.search(value):
        raise bad(f"{param} must not contain control characters", param)
    return value


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
    stored_text(model, "model")
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
    if feature is not None and not FEATURE_RE.fullmatch(feature):
        raise bad("feature must be 1-64 characters of letters, digits and _ . : / -", "feature")
    return feature


def parse_chat(call: Call, body: dict[str, Any]) -> None:
    """The checks of a chat-completions body, the client's or a dialect's translation of it."""
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
    call.user = stored_text(body.get("user"), "user")
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
    call.user = stored_text(body.get("user"), "user")
    call.feature = feature_of(call, body)
    call.body = body


def parse_dialect(call: Call) -> None:
    """Another dialect's body: translated to chat (its own 400s name its own fields), checked as
    chat, kept as sent for a provider that speaks the dialect; the answer is translated back by
    the outermost step of the answer path."""
    native = load_json_object(call.raw_body)
    parse_chat(call, call.dialect.to_chat(native))
    meta = native.get("metadata")
    if isinstance(meta, dict) and "feature" in meta:  # a gateway field: the upstream never sees it
        native["metadata"] = {k: v for k, v in meta.items() if k != "feature"}
    call.native_body = native
    call.transform(DialectAnswer(call.dialect, native))


class Parse:
    async def __call__(self, call: Call, next: Next) -> None:
        if call.endpoint == "embeddings":
            parse_embeddings(call)
        elif call.dialect is OPENAI:
            parse_chat(call, load_json_object(call.raw_body))
        else:
            parse_dialect(call)
        await next(call)
