"""The Responses API as a dialect (``protocol/base.py``): one call's Responses edge.

Unlike a stateless dialect, a ``ResponsesDialect`` is made fresh for each call
(``ResponsesDialect.fresh``): a response has an id the client may quote later
(``previous_response_id``, ``GET /v1/responses/{id}``), so the call's dialect holds it, and it
remembers the chat answer it translated (``answer``) for the conversation store to keep. The
translation itself is the pure functions of ``responses_request.py``, ``responses_answer.py`` and
``responses_stream.py``. Errors have the chat API's shape when not streamed (the Responses API
uses the same body); a stream that breaks ends with an ``error`` event and ``response.failed``,
numbered on from the events already sent. The stream has no ``[DONE]`` line.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from passerelle.errors import APIError
from passerelle.protocol.base import StreamTranslator
from passerelle.protocol.responses_answer import ResponseIds, from_chat_completion
from passerelle.protocol.responses_request import to_chat
from passerelle.protocol.responses_stream import Event, ResponsesStream
from passerelle.providers.base import StreamChunk

NAME = "responses"


def sse(events: list[Event]) -> list[StreamChunk]:
    return [StreamChunk(data=orjson.dumps(e), event=e["type"].encode()) for e in events]


class ResponsesTranslator:
    """The stream translator the answer path drives: events as SSE chunks with their names."""

    __slots__ = ("stream",)

    def __init__(self, stream: ResponsesStream) -> None:
        self.stream = stream

    def feed(self, chunk: dict[str, Any]) -> list[StreamChunk]:
        return sse(self.stream.feed(chunk))

    def end(self) -> list[StreamChunk]:
        return sse(self.stream.end())


class ResponsesDialect:
    name = NAME
    done = b""
    native_headers: tuple[str, ...] = ()

    def __init__(self, ids: ResponseIds) -> None:
        self.ids = ids
        self._translator: ResponsesTranslator | None = None
        self._answer: dict[str, Any] | None = None

    @classmethod
    def fresh(cls) -> ResponsesDialect:
        return cls(ResponseIds.new(secrets.token_hex(24)))

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return to_chat(body)

    def completion(self, chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        self._answer = chat
        return from_chat_completion(self.ids, chat, request)

    def stream_translator(self, request: dict[str, Any]) -> StreamTranslator:
        self._translator = ResponsesTranslator(ResponsesStream(self.ids, request))
        return self._translator

    def answer(self) -> dict[str, Any] | None:
        """The chat answer this call translated (a stream's gathered back into one document),
        or None when it translated none (a passthrough, a failure)."""
        if self._translator is not None:
            return self._translator.stream.chunks.completion()
        return self._answer

    def error_body(self, error: APIError) -> bytes:
        return error.to_json()

    def error_event(self, error: APIError) -> bytes:
        if self._translator is None:
            self._translator = ResponsesTranslator(ResponsesStream(self.ids, {}))
        detail = error.body()["error"]
        fields = {"code": detail["code"], "message": detail["message"], "param": detail["param"]}
        events = self._translator.stream.failed(fields, error.status)
        return b"".join(
            b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events
        )
