"""An upstream's HTTP error as the ``ProviderError`` of its kind: one place per wire format.

The status decides the kind (``errors.py`` draws the tree): back-pressure, a failure worth
retrying, the gateway's own credentials refused, or the request rejected. A rejection keeps what
the upstream said, in OpenAI's terms: its status, ``type``, ``code`` and ``param``, so that a
``context_length_exceeded`` reaches a client's "trim the history and retry" logic as itself.
``openai_error`` reads OpenAI's body (and vLLM's older flat one), ``anthropic_error`` Anthropic's.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from passerelle.errors import (
    ProviderBackPressureError,
    ProviderCredentialError,
    ProviderError,
    ProviderFailedError,
    ProviderNotFoundError,
    ProviderOverloadedError,
    ProviderRejectedError,
)

MAX_MESSAGE = 500
TRANSIENT_4XX = frozenset({408, 409, 425})  # timeout, conflict, too early: try again
CREDENTIALS = frozenset({401, 402, 403})
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
# how Anthropic says a prompt is over the context window (it has no code for it)
ANTHROPIC_TOO_LONG = ("prompt is too long", "exceed context limit", "input length and `max_tokens`")


def retry_after_s(value: str | None, now: float | None = None) -> str | None:
    """A ``Retry-After`` as whole seconds: its delay, or the seconds until its HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return value
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return str(max(0, math.ceil(when - (time.time() if now is None else now))))


def from_status(
    provider: str,
    status: int,
    *,
    message: str | None = None,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    retry_after: str | None = None,
) -> ProviderError:
    """The kind of failure an HTTP status means, with what the upstream said about it."""
    text = (message or f"HTTP {status}")[:MAX_MESSAGE]
    retry_after = retry_after_s(retry_after)
    if status == 429:
        return ProviderBackPressureError(
            text, provider=provider, status=status, retry_after=retry_after
        )
    if status == 529:
        return ProviderOverloadedError(
            text, provider=provider, status=status, retry_after=retry_after
        )
    if status == 503 and retry_after is not None:
        return ProviderBackPressureError(
            text, provider=provider, status=status, retry_after=retry_after
        )
    if status >= 500 or status in TRANSIENT_4XX or status < 400:
        return ProviderFailedError(text, provider=provider, status=status)
    if status in CREDENTIALS:
        return ProviderCredentialError(text, provider=provider, status=status)
    kind = ProviderNotFoundError if status == 404 else ProviderRejectedError
    return kind(
        text,
        provider=provider,
        status=status,
        type=type or "invalid_request_error",
        code=code,
        param=param,
    )


def _json(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    return None


def openai_error(
    provider: str, status: int, raw: bytes, retry_after: str | None = None
) -> ProviderError:
    """``{"error": {"message", "type", "param", "code"}}``, or vLLM's flat ``{"object": "error",
    "message", "type", "param", "code"}``."""
    doc = _json(raw)
    err = doc.get("error")
    fields = err if isinstance(err, dict) else doc
    code = fields.get("code")
    return from_status(
        provider,
        status,
        message=_text(fields.get("message")),
        type=_text(fields.get("type")) if isinstance(err, dict) else None,
        code=code if isinstance(code, str) and code else None,
        param=_text(fields.get("param")),
        retry_after=retry_after,
    )


def anthropic_error(
    provider: str, status: int, raw: bytes, retry_after: str | None = None
) -> ProviderError:
    """``{"type": "error", "error": {"type", "message"}}``; Anthropic names no codes, so a prompt
    over the context window is recognised by its message and given OpenAI's code for it."""
    err = _json(raw).get("error")
    fields = err if isinstance(err, dict) else {}
    message = _text(fields.get("message"))
    kind = _text(fields.get("type"))
    code = None
    if status == 400 and message and any(m in message.lower() for m in ANTHROPIC_TOO_LONG):
        code = CONTEXT_LENGTH_EXCEEDED
    elif status == 413 or kind == "request_too_large":
        code = "request_too_large"
    if kind == "overloaded_error" and status < 500:
        status = 529
    return from_status(
        provider,
        status,
        message=f"{kind}: {message}" if kind and message else message,
        code=code,
        param="messages" if code == CONTEXT_LENGTH_EXCEEDED else None,
        retry_after=retry_after,
    )


def anthropic_stream_error(provider: str, err: dict[str, Any]) -> ProviderError:
    """An ``error`` event in the middle of an Anthropic stream, by its type."""
    kind = _text(err.get("type"))
    message = f"stream error: {kind}: {err.get('message')}"[:MAX_MESSAGE]
    if kind == "overloaded_error":
        return ProviderOverloadedError(message, provider=provider, status=529)
    if kind == "rate_limit_error":
        return ProviderBackPressureError(message, provider=provider, status=429)
    return ProviderFailedError(message, provider=provider)
