"""A Messages call passed through to Anthropic as the client sent it (``UpstreamRequest.api``
``"messages"``), as pure functions.

The body goes as it is (``cache_control`` breakpoints, thinking, betas' fields and all), with the
upstream model and the output limit in force; the answer and each stream event come back
untouched, read only for what the gateway meters: the usage (prompt-cache reads and writes
included, ``usage_from_anthropic``) and the characters generated, should a stream die.
"""

from __future__ import annotations

from typing import Any

from passerelle.providers.anthropic_wire import usage_from_anthropic
from passerelle.providers.base import StreamChunk, UpstreamRequest
from passerelle.providers.upstream_errors import anthropic_stream_error


def native_body(request: UpstreamRequest) -> dict[str, Any]:
    """The client's body, model set by dispatch, held to the output limit in force."""
    assert request.native_body is not None, "a native request without its body"
    body = dict(request.native_body)
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    return body


def _chars(data: dict[str, Any]) -> int:
    delta = data.get("delta")
    if not isinstance(delta, dict):
        return 0
    text = delta.get("text") if delta.get("type") == "text_delta" else delta.get("partial_json")
    return len(text) if isinstance(text, str) else 0


class NativeStream:
    """Anthropic's events as they came, each with its name; the usage on ``message_stop``."""

    def __init__(self, *, provider: str) -> None:
        self.provider = provider
        self.done = False  # message_stop seen
        self._usage: dict[str, Any] = {}

    def feed(self, data: dict[str, Any], raw: bytes) -> StreamChunk:
        """The event as the client gets it; an ``error`` event raises its ``ProviderError``."""
        kind = str(data.get("type"))
        if kind == "error":
            error = data.get("error")
            raise anthropic_stream_error(self.provider, error if isinstance(error, dict) else {})
        if kind == "message_start":
            message = data.get("message")
            self._merge(message.get("usage") if isinstance(message, dict) else None)
        elif kind == "message_delta":
            self._merge(data.get("usage"))
        chunk = StreamChunk(data=raw, event=kind.encode(), content_chars=_chars(data))
        if kind == "message_stop":
            self.done = True
            chunk.usage = usage_from_anthropic(self._usage)
        return chunk

    def _merge(self, usage: Any) -> None:
        # message_delta counts are cumulative, so later values replace earlier ones
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})
