"""The OpenAI-compatible routes: chat completions, embeddings, models.

Each handler builds a ``Call``, runs it through the gateway's chain, takes the answer off the
answer path (``pipeline/answer.py``: a plain body passes the stages' transformers and observers
there, a stream as it is written), finishes the call (the ledger commit) and writes the bytes.
A transformer that fails a plain answer fails the call with a JSON error; it is still metered. Response headers: ``x-request-id`` always; ``x-passerelle-target`` once a
target answered; ``x-passerelle-cost-usd`` on non-streamed answers with a known price
(``x-passerelle-unpriced: true`` otherwise).
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from passerelle.errors import APIError, InvalidRequestError, ServiceUnavailableError, StoreError
from passerelle.gateway import Gateway
from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.auth import Auth
from passerelle.pipeline.context import Call
from passerelle.pricing.cost import format_usd
from passerelle.protocol.base import OPENAI, Dialect
from passerelle.server.body import read_body
from passerelle.server.errors import error_response, from_http_exception
from passerelle.server.openapi import openapi_json
from passerelle.server.sse import write_stream

log = logging.getLogger("passerelle.server")
GATEWAY = web.AppKey("gateway", Gateway)


def call_headers(call: Call) -> dict[str, str]:
    headers = {"x-request-id": call.request_id, **call.response_headers}
    if call.target is not None:
        headers["x-passerelle-target"] = call.target.label
    return headers


async def _finish(call: Call) -> None:
    try:
        await call.finish()
    except StoreError as exc:
        log.error("usage of %s could not be recorded: %s", call.request_id, exc)
        raise ServiceUnavailableError(
            "usage could not be recorded; the request was not completed", code="ledger_unavailable"
        ) from exc


async def run_call(
    request: web.Request, endpoint: str, dialect: Dialect = OPENAI
) -> web.StreamResponse:
    """One call in ``dialect``: every error it meets, from the body's reading on, in its shape."""
    gateway = request.app[GATEWAY]
    try:
        raw_body = await read_body(request)
    except ConnectionError:  # the client left, or was cut off by the body timeout: no error
        log.info("a client went away before its request body was whole")
        gone = InvalidRequestError("the request body did not arrive whole")
        return error_response(gone, dialect=dialect)
    except APIError as exc:
        return error_response(exc, dialect=dialect)
    except web.HTTPException as exc:  # aiohttp's own refusal of the body (too large)
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc, request), dialect=dialect)
    call = Call(endpoint=endpoint, headers=request.headers, raw_body=raw_body, dialect=dialect)
    try:
        await gateway.chain(call)
        answer = deliver(call)
    except APIError as exc:
        call.fail(exc)
        try:
            await _finish(call)
        except APIError as store_exc:
            exc = store_exc
        return error_response(exc, call.request_id, dialect)
    except Exception:
        log.exception("request %s failed", call.request_id)
        error = APIError("internal error; see the gateway's log")
        call.fail(error)
        await call.finish()
        return error_response(error, call.request_id, dialect)
    headers = call_headers(call)
    if isinstance(answer, AnswerStream):
        return await write_stream(request, call, answer, headers)
    try:
        await _finish(call)
    except APIError as exc:
        return error_response(exc, call.request_id, dialect)
    if call.cost_usd is None:
        headers["x-passerelle-unpriced"] = "true"
    else:
        headers["x-passerelle-cost-usd"] = format_usd(call.cost_usd)
    return web.Response(body=answer, content_type="application/json", headers=headers)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await run_call(request, "chat.completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await run_call(request, "embeddings")


async def models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    call = Call(endpoint="models", headers=request.headers, raw_body=b"")
    await Auth(gateway.keys)(call, _noop)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "passerelle"}
        for name in gateway.routes
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def _noop(call: Call) -> None:
    return None


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_json(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
