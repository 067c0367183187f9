"""The ``Dialect`` protocol: one inbound wire format, and ``OPENAI``, the gateway's own.

A client speaks a dialect (OpenAI chat completions, Anthropic Messages...); the pipeline works on
the canonical OpenAI chat-completions body whatever it is. A dialect translates at the two edges,
as pure functions: the request in (``to_chat``), the answer out (``completion``, a fresh
``stream_translator`` per streamed call), and errors in its own shape (``error_body``, and
``error_event`` for a stream that fails after its first bytes). ``done`` is what is written after
the last event of a stream. ``OPENAI`` is the identity: nothing to translate, and the pipeline
registers no translation for it, so the OpenAI path costs what it did before dialects existed.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from passerelle.errors import APIError
from passerelle.providers.base import StreamChunk


class StreamTranslator(Protocol):
    """One streamed call's state: chat.completion.chunk payloads in, the dialect's events out."""

    def feed(self, chunk: dict[str, Any]) -> list[StreamChunk]: ...

    def end(self) -> list[StreamChunk]:
        """The closing events, once the last chunk has been fed."""
        ...


class Dialect(Protocol):
    name: str  # the Call.endpoint value: "chat.completions", "embeddings", "messages", ...
    done: bytes  # written after the last event of a stream
    # the client's headers passed on to a provider that speaks the dialect itself
    native_headers: tuple[str, ...]

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """The client's body as an OpenAI chat-completions body (pure). Raises
        ``InvalidRequestError`` whose ``param`` uses the dialect's own field names."""
        ...

    def completion(self, chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion document as this dialect's answer (``request``: the client's body)."""
        ...

    def stream_translator(self, request: dict[str, Any]) -> StreamTranslator: ...

    def error_body(self, error: APIError) -> bytes:
        """A non-streamed error in this dialect's shape."""
        ...

    def error_event(self, error: APIError) -> bytes:
        """The final SSE bytes of a stream that failed after it started."""
        ...


class _Unchanged:
    """OpenAI's chunks stay OpenAI's."""

    def feed(self, chunk: dict[str, Any]) -> list[StreamChunk]:
        return [StreamChunk(data=orjson.dumps(chunk))]

    def end(self) -> list[StreamChunk]:
        return []


class OpenAIDialect:
    """OpenAI chat completions and embeddings: the canonical format, translated by nothing."""

    name = "chat.completions"
    done = b"data: [DONE]\n\n"
    native_headers: tuple[str, ...] = ()

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def completion(self, chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        return chat

    def stream_translator(self, request: dict[str, Any]) -> StreamTranslator:
        return _Unchanged()

    def error_body(self, error: APIError) -> bytes:
        return error.to_json()

    def error_event(self, error: APIError) -> bytes:
        return b"data: " + error.to_json() + b"\n\n"


OPENAI: Dialect = OpenAIDialect()
