"""Idempotency: a retried request with the same ``Idempotency-Key`` and body gets the first answer.

No second upstream call, no second charge: the replay is metered at cost 0 with status
``replayed``. The same key with another body is a 409, as is a key whose first request is still
running. The key is scoped to the tenant, so two tenants can never see each other's answers: the
scope starts with the tenant name's length, so no (tenant, key) pair can spell another's scope
(``acme:x`` with key ``k9`` and ``acme`` with key ``x:k9`` once shared one).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncGenerator

from passerelle.errors import (
    ConflictError,
    InvalidRequestError,
    ServiceUnavailableError,
    StoreError,
)
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import AnswerObserver, Call, ChunkStream
from passerelle.pricing.cost import format_usd
from passerelle.providers.base import Completion, StreamChunk, Usage
from passerelle.store.idempotency import IdempotencyStore, StoredAnswer
from passerelle.store.records import Status

HEADER = "Idempotency-Key"
log = logging.getLogger("passerelle.idempotency")
# what a replay repeats of the first answer; its cost is its own (0)
REPLAYED_HEADERS = ("x-passerelle-target",)


def replayed_chunks(answer: StoredAnswer) -> list[StreamChunk]:
    assert answer.chunks is not None
    names = answer.events or [None] * len(answer.chunks)
    return [
        StreamChunk(data=data, event=name.encode() if name else None)
        for data, name in zip(answer.chunks, names, strict=True)
    ]


async def _replay_rest(chunks: list[StreamChunk]) -> AsyncGenerator[StreamChunk, None]:
    for chunk in chunks:
        yield chunk


class Capture(AnswerObserver):
    """The first answer as the client gets it (what inner stages made of it): the body, or the
    events the client was sent, with their SSE event names (a dialect's answer passed through
    from a provider that speaks it has them)."""

    __slots__ = ("events", "names", "plain")

    def __init__(self) -> None:
        self.plain: bytes | None = None
        self.events: list[bytes] = []
        self.names: list[str | None] = []

    def body(self, call: Call, body: bytes) -> None:
        self.plain = body

    def event(self, call: Call, chunk: StreamChunk) -> None:
        if chunk.forward:
            self.events.append(chunk.data)
            self.names.append(chunk.event.decode() if chunk.event else None)


def idempotency_scope(tenant: str, key: str) -> str:
    """The store key of an Idempotency-Key: unambiguous whatever either string contains."""
    return f"{len(tenant)}:{tenant}:{key}"


class Idempotency:
    def __init__(self, store: IdempotencyStore) -> None:
        self._store = store

    async def __call__(self, call: Call, next: Next) -> None:
        key = call.headers.get(HEADER)
        if key is None:
            await next(call)
            return
        if not 1 <= len(key) <= 255:
            raise InvalidRequestError(
                "Idempotency-Key must be 1-255 characters", param="Idempotency-Key"
            )
        scoped = idempotency_scope(call.tenant or "", key)
        digest = hashlib.sha256(call.endpoint.encode() + b"\0" + call.raw_body).hexdigest()
        try:
            claim = await self._store.begin(scoped, digest)
        except StoreError as exc:
            raise ServiceUnavailableError(
                "idempotency state is unreachable", code="idempotency_store_unavailable"
            ) from exc
        if claim.state == "conflict":
            raise ConflictError(
                "this Idempotency-Key was used with a different request body",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        if claim.state == "pending":
            raise ConflictError(
                "a request with this Idempotency-Key is still in progress",
                param="Idempotency-Key",
                code="idempotency_key_in_progress",
            )
        if claim.state == "lost":
            raise ConflictError(
                "the first request with this Idempotency-Key was answered, but the stored answer "
                "was lost with the shared state; it cannot be replayed, and the key is refused "
                "rather than run twice (use a new key to run the request again)",
                param="Idempotency-Key",
                code="idempotency_answer_lost",
            )
        if claim.state == "replay" and claim.answer is not None:
            self._replay(call, claim.answer)
            return
        captured = Capture()
        call.observe(captured)
        call.defer(lambda c: self._store_answer(c, scoped, digest, captured))
        await next(call)

    def _replay(self, call: Call, answer: StoredAnswer) -> None:
        call.status = Status.REPLAYED
        call.usage = Usage()
        original = answer.headers.get("x-request-id")
        call.response_headers.update(
            {k: v for k, v in answer.headers.items() if k in REPLAYED_HEADERS}
        )
        call.response_headers["x-passerelle-idempotent-replay"] = original or "true"
        call.native = answer.native  # as it was stored: translated again only if it was then
        if answer.chunks is not None:
            call.stream = True
            first, *rest = replayed_chunks(answer)
            call.result = ChunkStream(first=first, rest=_replay_rest(rest))
        else:
            assert answer.body is not None
            call.result = Completion(body=answer.body, usage=Usage(), upstream_model="")

    async def _store_answer(self, call: Call, key: str, digest: str, captured: Capture) -> None:
        streamed = isinstance(call.result, ChunkStream)
        seen = bool(captured.events) if streamed else captured.plain is not None
        if call.status != "ok" or not seen:
            await self._store.abandon(key, digest)
            return
        headers = {"x-request-id": call.request_id}
        if call.target is not None:
            headers["x-passerelle-target"] = call.target.label
        if call.cost_usd is not None:
            headers["x-passerelle-cost-usd"] = format_usd(call.cost_usd)
        if streamed:
            names = captured.names if any(captured.names) else None
            answer = StoredAnswer(
                headers=headers,
                body=None,
                chunks=captured.events,
                events=names,
                native=call.native,
            )
        else:
            answer = StoredAnswer(
                headers=headers, body=captured.plain, chunks=None, native=call.native
            )
        try:
            await self._store.complete(key, digest, answer)
        except StoreError as exc:  # the answer is served; a retry will run again, not replay
            log.error("%s: idempotent answer not stored: %s", call.request_id, exc)
