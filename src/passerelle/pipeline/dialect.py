"""``DialectAnswer``: the answer turned into the client's dialect, on its way out.

Parse registers it first in the answer path, so it is the outermost step: every stage inside it
(the meter, the idempotency capture, later the cache) sees the canonical chat-format answer, and
only the client gets the dialect's. A plain completion is translated whole; a stream is fed event
by event to the dialect's translator, whose closing events come out of ``flush``. An answer the
provider gave in the dialect itself (``call.native``, a passthrough) is left untouched. It is
registered only for a dialect other than OpenAI's, which needs no translation.
"""

from __future__ import annotations

from typing import Any

import orjson

from passerelle.pipeline.context import AnswerTransformer, Call
from passerelle.protocol.base import Dialect, StreamTranslator
from passerelle.providers.base import StreamChunk


class DialectAnswer(AnswerTransformer):
    __slots__ = ("_dialect", "_request", "_translator")

    def __init__(self, dialect: Dialect, request: dict[str, Any]) -> None:
        self._dialect = dialect
        self._request = request  # the client's own body
        self._translator: StreamTranslator | None = None

    def body(self, call: Call, body: bytes) -> bytes:
        if call.native:
            return body
        return orjson.dumps(self._dialect.completion(orjson.loads(body), self._request))

    def event(self, call: Call, chunk: StreamChunk) -> list[StreamChunk]:
        if call.native or not chunk.data:
            return [chunk]
        if self._translator is None:
            self._translator = self._dialect.stream_translator(self._request)
        out = self._translator.feed(orjson.loads(chunk.data))
        if chunk.usage is None and not chunk.content_chars:
            return out
        if not out:  # what it said still counts: an event the client is not sent
            return [StreamChunk(b"", chunk.usage, chunk.content_chars, forward=False)]
        out[0].content_chars += chunk.content_chars
        if chunk.usage is not None:
            out[-1].usage = chunk.usage
        return out

    def flush(self, call: Call) -> list[StreamChunk]:
        if call.native:
            return []
        if self._translator is None:
            self._translator = self._dialect.stream_translator(self._request)
        return self._translator.end()
