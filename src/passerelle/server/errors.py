"""One renderer for every error the server returns, unknown routes and oversized bodies included.

Whatever goes wrong, the client gets OpenAI's error shape (or, on a route of another dialect,
that dialect's: ``Dialect.error_body``) and a status its SDK maps to the right exception. An unexpected exception is logged with its traceback on the server and answered with a
plain 500 that says nothing of the internals. A refused request is logged in one line (status,
code, param, request id; never the message, which may name what the client sent): at INFO for
malformed requests (400, 405, 409, 413), at DEBUG for the rest (401, 403, 404, 429...), which a
flood would otherwise turn into a flood of log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from passerelle.errors import (
    APIError,
    ConflictError,
    HTTPStatusError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    ServiceUnavailableError,
    StoreError,
)
from passerelle.protocol.base import OPENAI, Dialect

log = logging.getLogger("passerelle.server")
# refusals logged at INFO: a malformed request; the others (401, 404, 429...) at DEBUG
MALFORMED = (InvalidRequestError, MethodNotAllowedError, ConflictError, RequestTooLargeError)


def error_response(
    error: APIError, request_id: str | None = None, dialect: Dialect = OPENAI
) -> web.Response:
    if error.status < 500:
        log.log(
            logging.INFO if isinstance(error, MALFORMED) else logging.DEBUG,
            "request refused: %s %s param=%s request_id=%s",
            error.status,
            error.code,
            error.param,
            request_id or "-",
        )
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return web.Response(
        status=error.status,
        body=dialect.error_body(error),
        content_type="application/json",
        headers=headers,
    )


def from_http_exception(exc: web.HTTPException, request: web.Request) -> APIError:
    if isinstance(exc, web.HTTPNotFound):
        return NotFoundError(f"no route for {request.method} {request.path}", code="unknown_route")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allow = exc.headers.get("Allow")  # RFC 9110: a 405 lists the methods that are allowed
        return MethodNotAllowedError(
            f"method {request.method} is not allowed on {request.path}",
            headers={"Allow": allow} if allow else None,
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return RequestTooLargeError("request body is too large")
    return HTTPStatusError(exc.reason or "error", status=exc.status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc, request))
    except StoreError as exc:  # the admin API reads and writes the ledger
        log.error("%s %s: %s", request.method, request.path, exc)
        return error_response(
            ServiceUnavailableError(
                "the ledger is unreachable; try again shortly", code="ledger_unavailable"
            )
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(APIError("internal error; see the gateway's log"))
