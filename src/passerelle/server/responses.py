"""The Responses API's routes: ``POST /v1/responses`` and ``GET /v1/responses/{response_id}``.

A ``POST`` is a call like any other, in the Responses dialect (a fresh ``ResponsesDialect`` for
each, holding the new response's id); the chain meters, budgets and routes it as chat. A ``GET``
reads back a response the gateway kept (``pipeline/conversation.py``), for its own tenant only:
another tenant's id is as unknown as an id never made (404).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from passerelle.errors import APIError, NotFoundError
from passerelle.pipeline.auth import Auth
from passerelle.pipeline.context import Call
from passerelle.pipeline.conversation import kept
from passerelle.protocol.responses import NAME, ResponsesDialect
from passerelle.protocol.responses_answer import ResponseIds
from passerelle.server.errors import REQUEST_ID, error_response
from passerelle.server.routes import GATEWAY, run_call


async def create_response(request: web.Request) -> web.StreamResponse:
    return await run_call(request, NAME, ResponsesDialect.fresh())


async def retrieve_response(request: web.Request) -> web.Response:
    call = Call(
        endpoint=NAME, headers=request.headers, raw_body=b"", request_id=request[REQUEST_ID]
    )
    try:
        document = await _kept(request, call)
    except APIError as exc:
        return error_response(exc, call.request_id)
    response_id = request.match_info["response_id"]
    dialect = ResponsesDialect(ResponseIds(response_id, int(document["created_at"])))
    body = dialect.completion(document["completion"], document["request"])
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"x-request-id": call.request_id},
    )


async def _kept(request: web.Request, call: Call) -> dict[str, Any]:
    gateway = request.app[GATEWAY]
    await Auth(gateway.keys)(call, _noop)
    response_id = request.match_info["response_id"]
    store = gateway.conversations
    document = None
    if store is not None and call.tenant is not None:
        document = await kept(store, call.tenant, response_id)
    if document is None:
        raise NotFoundError(
            f"response with id '{response_id}' not found", code="response_not_found"
        )
    return document


async def _noop(call: Call) -> None:
    return None


def add_responses_routes(app: web.Application) -> None:
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", retrieve_response)
