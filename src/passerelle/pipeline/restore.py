"""The answer of a pseudonymised call, with its placeholders put back before the client sees it.

An answer transformer (``pipeline/answer.py``) registered by the personal-data stage: it sees the
provider's answer in the canonical form (a chat completion, a legacy text completion, or their
stream events; another dialect is translated after it, outermost) and rewrites every text a model
writes: a choice's content and refusal, a tool call's arguments, a legacy completion's text.
Streamed, each of these is restored as it passes (``sovereignty/placeholders.py``'s
``Restorer``): a placeholder split across events is held until whole, and what is held when a
choice finishes is sent just before its finishing event. An answer it cannot read (not JSON) is
never passed on unrestored: the client gets a 502 instead (on a stream, the final error event).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from passerelle.errors import UpstreamError
from passerelle.pipeline.context import AnswerTransformer, Call
from passerelle.providers.base import StreamChunk
from passerelle.sovereignty.placeholders import Pseudonyms, Restorer


class RestorationFailedError(UpstreamError):
    """The answer could not be read to put the personal values back: it is not served."""

    code = "personal_data_restoration_failed"


def unreadable() -> RestorationFailedError:
    return RestorationFailedError(
        "the provider's answer could not be read to restore the personal data pseudonymised "
        "in the request, so it is not served"
    )


class RestoreAnswer(AnswerTransformer):
    def __init__(self, pseudonyms: Pseudonyms) -> None:
        self._pseudonyms = pseudonyms
        self._streams: dict[tuple[int, str, int], Restorer] = {}  # (choice, field, tool index)
        self._template: dict[str, Any] | None = None  # an event's envelope, for what is flushed

    def body(self, call: Call, body: bytes) -> bytes:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise unreadable() from exc
        restore = self._pseudonyms.restore
        for choice in doc.get("choices") or ():
            if isinstance(choice.get("text"), str):
                choice["text"] = restore(choice["text"])
            message = choice.get("message")
            if not isinstance(message, dict):
                continue
            for field in ("content", "refusal"):
                if isinstance(message.get(field), str):
                    message[field] = restore(message[field])
            for tool_call in message.get("tool_calls") or ():
                function = tool_call.get("function") or {}
                if isinstance(function.get("arguments"), str):
                    function["arguments"] = restore(function["arguments"])
        return orjson.dumps(doc)

    def event(self, call: Call, chunk: StreamChunk) -> list[StreamChunk]:
        if not chunk.data or chunk.data == b"[DONE]":
            return [chunk]
        try:
            doc = orjson.loads(chunk.data)
        except orjson.JSONDecodeError as exc:
            raise unreadable() from exc
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not choices:
            return [chunk]
        if self._template is None:
            self._template = {k: v for k, v in doc.items() if k not in ("choices", "usage")}
        before: list[StreamChunk] = []
        chars = 0
        for choice in choices:
            index = choice.get("index", 0)
            chars += self._restore_choice(index, choice)
            if choice.get("finish_reason") is not None:
                before += self._flushed(index)
        out = dataclasses.replace(chunk, data=orjson.dumps(doc), content_chars=chars)
        return [*before, out]

    def _restore_choice(self, index: int, choice: dict[str, Any]) -> int:
        chars = 0
        if isinstance(choice.get("text"), str):
            choice["text"] = self._feed((index, "text", 0), choice["text"])
            chars += len(choice["text"])
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return chars
        for field in ("content", "refusal"):
            if isinstance(delta.get(field), str):
                delta[field] = self._feed((index, field, 0), delta[field])
                chars += len(delta[field])
        for tool_call in delta.get("tool_calls") or ():
            function = tool_call.get("function") or {}
            if isinstance(function.get("arguments"), str):
                key = (index, "arguments", tool_call.get("index", 0))
                function["arguments"] = self._feed(key, function["arguments"])
        return chars

    def _feed(self, key: tuple[int, str, int], text: str) -> str:
        restorer = self._streams.get(key)
        if restorer is None:
            restorer = self._streams[key] = Restorer(self._pseudonyms)
        return restorer.feed(text)

    def _flushed(self, index: int | None) -> list[StreamChunk]:
        """Events carrying what is held for one choice (``None``: every choice)."""
        out = []
        for key in [k for k in self._streams if index is None or k[0] == index]:
            held = self._streams.pop(key).flush()
            if held:
                out.append(self._held_event(key, held))
        return out

    def _held_event(self, key: tuple[int, str, int], text: str) -> StreamChunk:
        index, field, tool = key
        choice: dict[str, Any] = {"index": index, "finish_reason": None}
        if field == "text":
            choice["text"] = text
        elif field == "arguments":
            choice["delta"] = {"tool_calls": [{"index": tool, "function": {"arguments": text}}]}
        else:
            choice["delta"] = {field: text}
        doc = {**(self._template or {"object": "chat.completion.chunk"}), "choices": [choice]}
        chars = len(text) if field != "arguments" else 0
        return StreamChunk(orjson.dumps(doc), content_chars=chars)

    def flush(self, call: Call) -> list[StreamChunk]:
        return self._flushed(None)
