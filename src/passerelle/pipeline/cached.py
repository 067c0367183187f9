"""A cached answer: what is kept of a complete answer, how it is captured, and how it is served.

``CachedAnswer`` keeps the answer in the form it came in, as the inner stages made it (the
canonical chat format: the client's dialect is put on by the outermost step of the answer path,
on a hit as on a miss): a ``chat.completion`` body, or a stream's ``chat.completion.chunk``
payloads in order, with which of them the client was not sent (the usage chunk it did not ask
for). It also keeps whose it is (the tenant, checked again on every hit), the target that
answered and what the call cost, which is what a hit saves.

Served (``serve``), a stored stream is replayed as a stream, event for event, its usage chunk
sent only to a client that asked for it; a stored body is the answer of a plain request; and each
form is rebuilt from the other when the next client asks for the other (``protocol/chat_forms``).
A hit is the call's answer like a provider's: the stages outside the cache see it pass, the meter
records it at 0 tokens and cost 0, with what it saved.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson

from passerelle.pipeline.context import AnswerObserver, Call, ChunkStream
from passerelle.protocol.chat_forms import chunks_of, gather, stream_unfinished, unfinished
from passerelle.providers.base import Completion, StreamChunk, Usage
from passerelle.store.records import CacheOutcome, SavingSource, Status, from_pico, to_pico

FORMAT = 1  # the entry's layout; an entry of another is a miss


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    tenant: str
    body: bytes | None  # a chat.completion document
    events: list[bytes] | None  # or a stream's chunk payloads
    hidden: tuple[int, ...] = ()  # events the client was not sent
    usage_event: int | None = None  # the usage-only chunk, sent to a client that asks for it
    target: str = ""  # the target that answered, ``provider/upstream-model``
    cost_pusd: int | None = None  # what the call cost (None: unpriced)
    request_id: str = ""  # the call that was answered

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "v": FORMAT,
                "tenant": self.tenant,
                "body": self.body.decode() if self.body is not None else None,
                "events": [e.decode() for e in self.events] if self.events is not None else None,
                "hidden": self.hidden,
                "usage_event": self.usage_event,
                "target": self.target,
                "cost_pusd": self.cost_pusd,
                "request_id": self.request_id,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> CachedAnswer | None:
        try:
            d = orjson.loads(raw)
            if d.get("v") != FORMAT:
                return None
            return cls(
                tenant=d["tenant"],
                body=d["body"].encode() if d["body"] is not None else None,
                events=[e.encode() for e in d["events"]] if d["events"] is not None else None,
                hidden=tuple(d["hidden"]),
                usage_event=d["usage_event"],
                target=d["target"],
                cost_pusd=d["cost_pusd"],
                request_id=d["request_id"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None

    def completion(self) -> dict[str, Any]:
        """The answer as one ``chat.completion`` document, whichever form it was kept in."""
        if self.body is not None:
            doc: dict[str, Any] = orjson.loads(self.body)
            return doc
        assert self.events is not None
        return gather([orjson.loads(e) for e in self.events])

    def stream_chunks(self, include_usage: bool) -> list[StreamChunk]:
        if self.events is None:
            return [
                StreamChunk(data=orjson.dumps(c))
                for c in chunks_of(self.completion(), include_usage=include_usage)
            ]
        hidden = set(self.hidden)
        if self.usage_event is not None:
            (hidden.discard if include_usage else hidden.add)(self.usage_event)
        return [StreamChunk(data=e, forward=i not in hidden) for i, e in enumerate(self.events)]


def serve(call: Call, answer: CachedAnswer, source: SavingSource) -> None:
    """Make ``answer`` the call's answer: a hit, metered at cost 0 with what it saved."""
    call.status = Status.OK
    call.usage = Usage()  # no token was processed for it; the meter records 0
    call.cache = CacheOutcome.HIT
    call.saving_source = source
    call.saved_usd = from_pico(answer.cost_pusd or 0)
    call.response_headers["x-passerelle-cache"] = "hit"
    call.response_headers["x-passerelle-cache-match"] = source.value.removeprefix("cache_")
    call.response_headers["x-passerelle-cached-from"] = answer.request_id
    if answer.target:
        call.response_headers["x-passerelle-target"] = answer.target
    if call.stream:
        first, *rest = answer.stream_chunks(call.include_usage)
        call.result = ChunkStream(first=first, rest=_replay(rest), drain_on_disconnect=False)
    else:
        body = answer.body if answer.body is not None else orjson.dumps(answer.completion())
        call.result = Completion(body=body, usage=Usage(), upstream_model="")


async def _replay(chunks: list[StreamChunk]) -> AsyncGenerator[StreamChunk, None]:
    for chunk in chunks:
        yield chunk


class Capture(AnswerObserver):
    """The answer as the stages inside the cache made it: the body, or every event."""

    __slots__ = ("events", "hidden", "plain", "usage_event")

    def __init__(self) -> None:
        self.plain: bytes | None = None
        self.events: list[bytes] = []
        self.hidden: list[int] = []
        self.usage_event: int | None = None

    def body(self, call: Call, body: bytes) -> None:
        self.plain = body

    def event(self, call: Call, chunk: StreamChunk) -> None:
        if not chunk.data:  # an empty event no one sees (a batch's end)
            return
        if chunk.usage is not None and self.usage_event is None and _usage_only(chunk):
            self.usage_event = len(self.events)
        if not chunk.forward:
            self.hidden.append(len(self.events))
        self.events.append(chunk.data)

    def answer(self, call: Call, *, max_bytes: int) -> CachedAnswer | None:
        """What to keep of the call's answer, or None when it must not be kept: not a whole,
        successful, chat-format answer, or larger than ``max_bytes``."""
        if call.status != Status.OK or call.error is not None or call.native:
            return None
        streamed = isinstance(call.result, ChunkStream)
        if (streamed and not self.events) or (not streamed and self.plain is None):
            return None
        held = len(self.plain) if self.plain is not None else sum(map(len, self.events))
        if held > max_bytes:
            return None
        cost = call.cost_usd
        answer = CachedAnswer(
            tenant=call.tenant or "",
            body=None if streamed else self.plain,
            events=self.events if streamed else None,
            hidden=tuple(self.hidden),
            usage_event=self.usage_event,
            target=call.target.label if call.target is not None else "",
            cost_pusd=to_pico(cost) if cost is not None else None,
            request_id=call.request_id,
        )
        own_limit = _own_limit(call)
        if streamed:
            n = call.body.get("n")
            choices = n if isinstance(n, int) and n > 1 else 1
            whole = stream_unfinished(self.events, choices=choices, length_is_complete=own_limit)
            return answer if whole is None else None
        try:
            completion = answer.completion()
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            return None
        if not isinstance(completion, dict):
            return None
        return answer if unfinished(completion, length_is_complete=own_limit) is None else None


def _usage_only(chunk: StreamChunk) -> bool:
    if not chunk.forward:
        return True
    try:
        doc = orjson.loads(chunk.data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and not doc.get("choices")


def _own_limit(call: Call) -> bool:
    """Was the output limit in force the client's own? (Then an answer stopped by it is whole.)"""
    own = call.body.get("max_completion_tokens", call.body.get("max_tokens"))
    return own is not None and own == call.max_tokens
