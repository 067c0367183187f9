"""The client routes: OpenAI's chat completions, legacy completions, embeddings and models,
Anthropic's messages.

Each handler builds a ``Call``, runs it through the gateway's chain, takes the answer off the
answer path (``pipeline/answer.py``: a plain body passes the stages' transformers and observers
there, a stream as it is written), finishes the call (the ledger commit) and writes the bytes.
A transformer that fails a plain answer fails the call with a JSON error; it is still metered. Response headers: ``x-request-id`` always; ``x-passerelle-target`` once a
target answered; ``x-passerelle-cost-usd`` on non-streamed answers with a known price
(``x-passerelle-unpriced: true`` otherwise). The request id is the one the error middleware
gave the request (``server/errors.py``), so a refusal before the call existed carries one too.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from passerelle.errors import (
    APIError,
    InvalidRequestError,
    NotFoundError,
    ServiceUnavailableError,
    StoreError,
)
from passerelle.gateway import Gateway
from passerelle.pipeline.answer import AnswerStream, deliver
from passerelle.pipeline.auth import Auth
from passerelle.pipeline.context import Call
from passerelle.pipeline.parse import load_json_object, require_model
from passerelle.pricing.cost import format_usd
from passerelle.protocol.anthropic_messages import ANTHROPIC_MESSAGES, count_tokens
from passerelle.protocol.base import OPENAI, Dialect
from passerelle.server.body import read_body
from passerelle.server.errors import REQUEST_ID, error_response, from_http_exception
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
        return error_response(gone, request[REQUEST_ID], dialect)
    except APIError as exc:
        return error_response(exc, request[REQUEST_ID], dialect)
    except web.HTTPException as exc:  # aiohttp's own refusal of the body (too large)
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc, request), request[REQUEST_ID], dialect)
    call = Call(
        endpoint=endpoint,
        headers=request.headers,
        raw_body=raw_body,
        dialect=dialect,
        request_id=request[REQUEST_ID],
    )
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


async def completions(request: web.Request) -> web.StreamResponse:
    return await run_call(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await run_call(request, "embeddings")


def model_object(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "passerelle"}


async def _authenticate(request: web.Request, endpoint: str) -> None:
    call = Call(
        endpoint=endpoint, headers=request.headers, raw_body=b"", request_id=request[REQUEST_ID]
    )
    await Auth(request.app[GATEWAY].keys)(call, _noop)


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic's Messages API (``docs/anthropic.md``); ``anthropic-version`` and
    ``anthropic-beta`` are accepted whatever they say."""
    return await run_call(request, ANTHROPIC_MESSAGES.name, ANTHROPIC_MESSAGES)


async def count_message_tokens(request: web.Request) -> web.Response:
    """``/v1/messages/count_tokens``: the gateway's estimate, free and not metered, for a key and
    a model the gateway knows, every error in Anthropic's shape."""
    gateway = request.app[GATEWAY]
    call = Call(
        endpoint="messages.count_tokens",
        headers=request.headers,
        raw_body=b"",
        request_id=request[REQUEST_ID],
    )
    try:
        call.raw_body = await read_body(request)
        await Auth(gateway.keys)(call, _noop)
        body = load_json_object(call.raw_body)
        model = require_model(body)
        if model not in gateway.routes:
            raise NotFoundError(f"model: {model}", param="model", code="model_not_found")
        tokens = count_tokens(body)
    except APIError as exc:
        return error_response(exc, call.request_id, ANTHROPIC_MESSAGES)
    return web.Response(
        body=orjson.dumps({"input_tokens": tokens}),
        content_type="application/json",
        headers={"x-request-id": call.request_id},
    )


async def models(request: web.Request) -> web.Response:
    await _authenticate(request, "models")
    data = [model_object(name) for name in request.app[GATEWAY].routes]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def model(request: web.Request) -> web.Response:
    """One model, as OpenAI's ``GET /v1/models/{model}`` answers it; 404 ``model_not_found``."""
    await _authenticate(request, "models")
    name = request.match_info["model"]
    if name not in request.app[GATEWAY].routes:
        raise NotFoundError(
            f"the model '{name}' does not exist or you do not have access to it",
            param="model",
            code="model_not_found",
        )
    return web.Response(body=orjson.dumps(model_object(name)), content_type="application/json")


async def _noop(call: Call) -> None:
    return None


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_json(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_message_tokens)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model:.+}", model)
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
