"""Conversations: ``previous_response_id`` continued, and each response kept for the next turn.

The Responses API lets a client send only the new turn and name the response it follows; the
upstream (a chat API) needs the whole conversation. So for a Responses call (its dialect is a
``ResponsesDialect``) this stage, right after parsing and before anything prices the call, puts
the kept conversation in front of the turn (after this turn's own instructions: instructions are
not inherited, as in the Responses API), and once the answer is whole keeps the conversation with
it under the new response's id, unless the client said ``store: false``. Entries are per tenant
(``store/conversations.py``): an id another tenant made is not found, exactly like an id never
made, expired or never kept; every such case is a 400 naming ``previous_response_id``. A gateway
without retention (``server.responses_retention_s: 0``) says so in its 400.

What is kept is a chat-format document: ``messages`` (the conversation, this answer included,
without instructions), ``completion`` (the chat answer) and ``request`` (the client's settings
without its input), from which ``GET /v1/responses/{id}`` renders the response again.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from passerelle.errors import InvalidRequestError, ServiceUnavailableError, StoreError
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.protocol.responses import ResponsesDialect
from passerelle.protocol.responses_answer import assistant_message
from passerelle.protocol.responses_request import input_messages, instructions_messages
from passerelle.store.conversations import ConversationStore
from passerelle.store.records import Status

log = logging.getLogger("passerelle.conversation")


def not_found(response_id: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"previous response with id '{response_id}' not found (unknown, expired, another "
        "tenant's, or created with store: false)",
        param="previous_response_id",
        code="previous_response_not_found",
    )


async def kept(store: ConversationStore, tenant: str, response_id: str) -> dict[str, Any] | None:
    """A kept response's document, or None; 503 when the store cannot be reached."""
    try:
        raw = await store.get(tenant, response_id)
    except StoreError as exc:
        raise ServiceUnavailableError(
            "kept responses are unreachable; try again shortly", code="response_store_unavailable"
        ) from exc
    if raw is None:
        return None
    document: dict[str, Any] = orjson.loads(raw)
    return document


class Conversations:
    def __init__(self, store: ConversationStore | None) -> None:
        self._store = store if store is not None and store.retention_s > 0 else None

    async def __call__(self, call: Call, next: Next) -> None:
        dialect, request = call.dialect, call.native_body
        if not isinstance(dialect, ResponsesDialect) or request is None:
            await next(call)
            return
        history: list[dict[str, Any]] = []
        previous = request.get("previous_response_id")
        if previous is not None:
            history = await self._history(call, previous)
            at = len(instructions_messages(request))
            call.body["messages"][at:at] = history
        if self._store is not None and request.get("store", True) is not False:
            call.defer(lambda c: self._keep(c, dialect, request, history))
        await next(call)

    async def _history(self, call: Call, previous: Any) -> list[dict[str, Any]]:
        if not isinstance(previous, str) or not previous:
            raise InvalidRequestError(
                "previous_response_id must be a string", param="previous_response_id"
            )
        if self._store is None:
            raise InvalidRequestError(
                "this gateway keeps no responses (server.responses_retention_s is 0), so "
                "previous_response_id cannot be used; send the whole conversation as input",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        assert call.tenant is not None, "a call is authenticated before it is parsed"
        document = await kept(self._store, call.tenant, previous)
        if document is None:
            raise not_found(previous)
        messages: list[dict[str, Any]] = document["messages"]
        return messages

    async def _keep(
        self,
        call: Call,
        dialect: ResponsesDialect,
        request: dict[str, Any],
        history: list[dict[str, Any]],
    ) -> None:
        """The conversation with this answer, under this response's id: only a whole answer."""
        answer = dialect.answer()
        # an idempotent replay is a new response (its own id) the client may continue too
        whole = call.status in (Status.OK, Status.REPLAYED)
        if not whole or answer is None or call.tenant is None:
            return
        assert self._store is not None
        document = {
            "created_at": dialect.ids.created_at,
            "request": {k: v for k, v in request.items() if k != "input"},
            "messages": [*history, *input_messages(request), assistant_message(answer)],
            "completion": answer,
        }
        try:
            await self._store.put(call.tenant, dialect.ids.response, orjson.dumps(document))
        except StoreError as exc:  # the answer is served; only its continuation is lost
            log.error("%s: response %s not kept: %s", call.request_id, dialect.ids.response, exc)
