"""A streamed chat completion as the Responses API's typed event stream, one state machine a call.

The Responses stream is not a list of deltas but a story told in typed events, each with its
``type`` and a ``sequence_number``: ``response.created`` and ``response.in_progress``, then for
each output item ``response.output_item.added``, its content (``response.content_part.added``,
``response.output_text.delta`` ... ``.done``, ``response.content_part.done``; for a function call
``response.function_call_arguments.delta`` ... ``.done``) and ``response.output_item.done``, and
last ``response.completed`` (``response.incomplete`` when the output limit stopped it) with the
whole response and its usage. The official SDKs rebuild the response from these events and check
that every item they were told of was finished, so the order matters.

``ResponsesStream.feed`` takes one ``chat.completion.chunk`` and returns the events it makes;
``end`` the closing ones. Tool-call deltas are routed by their index, and arguments that arrive
before the call's id and name are held until the item can be announced. ``ChatChunks`` gathers
the same chunks back into one ``chat.completion`` document, what the conversation store keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passerelle.protocol.responses_answer import (
    Item,
    ResponseIds,
    ResponseStatus,
    function_call_item,
    message_item,
    output_text,
    response_object,
    response_usage,
)

Event = dict[str, Any]


@dataclass(slots=True)
class ToolCall:
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output_index: int | None = None  # set once announced


@dataclass(slots=True)
class ChatChunks:
    """``chat.completion.chunk``s (choice 0) gathered back into one ``chat.completion``."""

    id: str = ""
    model: str = ""
    created: int = 0
    text: str = ""
    refusal: str = ""
    tool_calls: dict[int, ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> tuple[str, list[tuple[int, dict[str, Any]]]]:
        """Take one chunk; returns its text delta and its tool-call deltas (index, delta)."""
        self.id = self.id or str(chunk.get("id") or "")
        self.model = self.model or str(chunk.get("model") or "")
        self.created = self.created or int(chunk.get("created") or 0)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        text, calls = "", []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            if isinstance(delta.get("refusal"), str):
                self.refusal += delta["refusal"]
            for tc in delta.get("tool_calls") or []:
                if isinstance(tc, dict):
                    calls.append((int(tc.get("index") or 0), tc))
                    self._tool_delta(int(tc.get("index") or 0), tc)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        self.text += text
        return text, calls

    def _tool_delta(self, index: int, tc: dict[str, Any]) -> None:
        call = self.tool_calls.setdefault(index, ToolCall())
        fn = tc.get("function") or {}
        if tc.get("id"):
            call.call_id = str(tc["id"])
        if fn.get("name"):
            call.name = str(fn["name"])
        if isinstance(fn.get("arguments"), str):
            call.arguments += fn["arguments"]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.refusal:
            message["refusal"] = self.refusal
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for _, c in sorted(self.tool_calls.items())
            ]
        elif message["content"] is None:
            message["content"] = ""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }


class ResponsesStream:
    """One call's translator: chat chunks in, Responses events out."""

    def __init__(self, ids: ResponseIds, request: dict[str, Any]) -> None:
        self._ids = ids
        self._request = request
        self._seq = 0
        self._started = False
        self._ended = False
        self._items = 0  # output items announced so far
        self._message: int | None = None  # output index of the open message item
        self._done: dict[int, Item] = {}  # finished items by output index
        self.chunks = ChatChunks()

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events = self._start()
        text, calls = self.chunks.add(chunk)
        if text:
            events += self._text(text)
        for index, tc in calls:
            events += self._tool(index, tc)
        return events

    def end(self) -> list[Event]:
        """The closing events: every open item finished, then the whole response."""
        if self._ended:
            return []
        self._ended = True
        events = self._start() + self._close_message()
        for index, call in sorted(self.chunks.tool_calls.items()):
            events += self._announce(index, call)
            assert call.output_index is not None
            item = self._function_item(index, call, ResponseStatus.COMPLETED)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=call.output_index,
                    arguments=call.arguments,
                )
            )
            events.append(self._item_done(call.output_index, item))
        final = self.response(ResponseStatus.COMPLETED)
        kind = f"response.{final['status']}"  # completed, or incomplete at the output limit
        events.append(self._event(kind, response=final))
        return events

    def response(self, status: ResponseStatus) -> dict[str, Any]:
        """The response as it stands: finished items in order, usage once known."""
        output = [self._done[i] for i in sorted(self._done)]
        return response_object(
            self._ids,
            self._request,
            model=self.chunks.model or str(self._request.get("model") or ""),
            status=status,
            output=[] if status is ResponseStatus.IN_PROGRESS else output,
            usage=None
            if status is ResponseStatus.IN_PROGRESS
            else response_usage(self.chunks.usage),
            finish_reason=self.chunks.finish_reason,
        )

    def failed(self, error: dict[str, Any], status: int) -> list[Event]:
        """The events that end a stream which broke: ``error`` with the gateway's own code, then
        ``response.failed``, whose error code is one of the few the Responses API defines (not
        after ``response.completed``: a failure after the end, the ledger's, is the error alone)."""
        events = self._start()
        events.append(self._event("error", **error))
        if self._ended:  # it had completed (what failed came after): the error alone
            return events
        failed = self.response(ResponseStatus.FAILED)
        code = "rate_limit_exceeded" if status == 429 else "server_error"
        failed["error"] = {"code": code, "message": error["message"]}
        events.append(self._event("response.failed", response=failed))
        self._ended = True
        return events

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        snapshot = self.response(ResponseStatus.IN_PROGRESS)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._message is None:
            self._message = self._items
            self._items += 1
            item = message_item(self._ids, "", None, ResponseStatus.IN_PROGRESS)
            item["content"] = []
            events.append(
                self._event("response.output_item.added", output_index=self._message, item=item)
            )
            events.append(self._part("response.content_part.added", output_text("")))
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._ids.message,
                output_index=self._message,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _part(self, kind: str, part: dict[str, Any]) -> Event:
        return self._event(
            kind, item_id=self._ids.message, output_index=self._message, content_index=0, part=part
        )

    def _close_message(self) -> list[Event]:
        if self._message is None:
            return []
        text = self.chunks.text
        events = [
            self._event(
                "response.output_text.done",
                item_id=self._ids.message,
                output_index=self._message,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._part("response.content_part.done", output_text(text)),
        ]
        item = message_item(self._ids, text, self.chunks.refusal or None, ResponseStatus.COMPLETED)
        events.append(self._item_done(self._message, item))
        self._message = None
        return events

    def _tool(self, index: int, tc: dict[str, Any]) -> list[Event]:
        call = self.chunks.tool_calls[index]
        if call.output_index is None:
            if not (call.call_id and call.name):
                return []  # held: the item cannot be announced without its id and name
            return self._announce(index, call)
        delta = (tc.get("function") or {}).get("arguments")
        if not isinstance(delta, str) or not delta:
            return []
        return [self._arguments(index, call, delta)]

    def _announce(self, index: int, call: ToolCall) -> list[Event]:
        """The function call item, and the arguments that arrived before it could be told."""
        if call.output_index is not None:
            return []
        events = self._close_message()
        call.output_index = self._items
        self._items += 1
        item = self._function_item(index, call, ResponseStatus.IN_PROGRESS)
        item["arguments"] = ""
        events.append(
            self._event("response.output_item.added", output_index=call.output_index, item=item)
        )
        if call.arguments:
            events.append(self._arguments(index, call, call.arguments))
        return events

    def _arguments(self, index: int, call: ToolCall, delta: str) -> Event:
        return self._event(
            "response.function_call_arguments.delta",
            item_id=self._ids.function_call(index),
            output_index=call.output_index,
            delta=delta,
        )

    def _function_item(self, index: int, call: ToolCall, status: ResponseStatus) -> Item:
        call_id = call.call_id or self._ids.function_call(index)
        return function_call_item(self._ids, index, call_id, call.name, call.arguments, status)

    def _item_done(self, output_index: int, item: Item) -> Event:
        self._done[output_index] = item
        return self._event("response.output_item.done", output_index=output_index, item=item)
