"""Client connections under a hostile client: timeouts, a cap, and parser errors in our shape.

aiohttp closes a connection left idle (its keep-alive timeout) but holds one forever that sends
its head or its body a byte at a time, accepts connections until the process runs out of
descriptors, and answers a request it cannot parse in plain text quoting the offending bytes (an
``Authorization`` value among them). This module is the HTTP server's own guard:

- idle: no request begun within ``idle_timeout_s`` of opening or of the last answer: closed
  (aiohttp's keep-alive timer, which also runs before the first request);
- head: a request line and headers not whole within ``header_timeout_s`` of their first byte:
  closed;
- body: a body not whole within ``body_timeout_s`` of its head: closed (the handler sees a
  client that went away, which is not an error);
- cap: past ``max_connections`` a new connection is answered ``503 too_many_connections`` with
  ``Retry-After`` and closed, without entering aiohttp's machinery;
- a parse error is answered ``400 malformed_http_request`` in OpenAI's error shape and logged in
  one line that names its kind, never its bytes.

Deadlines are checked by one sweep per server (a timer, not a task per connection), every quarter
of the shortest timeout; the hot path pays one comparison per read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import HttpProcessingError

from passerelle.errors import APIError, InvalidRequestError, ServiceUnavailableError
from passerelle.pipeline.context import new_request_id

log = logging.getLogger("passerelle.server")
REFUSED_LINGER_S = 1.0  # how long a refused connection may finish sending before it is closed
MAX_LINGERING = 64  # refused connections left to finish sending; past it, closed at once


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    idle_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1000

    @property
    def sweep_interval_s(self) -> float:
        return min(1.0, max(0.02, min(self.header_timeout_s, self.body_timeout_s) / 4))


def _http_answer(error: APIError) -> bytes:
    body = error.to_json()
    reason = {400: "Bad Request", 503: "Service Unavailable"}.get(error.status, "Error")
    head = [f"HTTP/1.1 {error.status} {reason}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in error.headers.items()]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(head).encode() + body


TOO_MANY = _http_answer(
    ServiceUnavailableError(
        "the gateway holds as many connections as it may; try again shortly",
        code="too_many_connections",
        headers={"Retry-After": "1"},
    )
)
_STATUS_LINE_END = TOO_MANY.index(b"\r\n") + 2


def too_many() -> bytes:
    """The refusal of a connection past the cap, with a request id of its own."""
    rid = b"x-request-id: %s\r\n" % new_request_id().encode()
    return TOO_MANY[:_STATUS_LINE_END] + rid + TOO_MANY[_STATUS_LINE_END:]


class GuardedRequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol for one connection, with the head and body deadlines and the cap."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._refused = False
        self._head_since: float | None = None  # first byte of a head not yet whole
        self._body_since: float | None = None  # head whole, body not yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            self._refuse(transport)
            return
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        waiter = self._waiter
        if self._head_since is None and waiter is not None and not waiter.done():
            self._head_since = self._loop.time()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            self._head_since = None

    def overdue(self, now: float) -> bool:
        """Past a deadline? Called by the server's sweep; starts the body clock on its way."""
        if self._head_since is not None:
            return now - self._head_since > self._guard.limits.header_timeout_s
        request = self._current_request
        if request is None or request.content.is_eof():
            self._body_since = None
            return False
        if self._body_since is None:
            self._body_since = now
        return now - self._body_since > self._guard.limits.body_timeout_s

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        """Answer at once and close soon, reading what the client still sends meanwhile: a
        close with unread bytes would reset the connection and lose the answer."""
        self._refused = True
        tcp = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio subclass
        tcp.write(too_many())
        if not self._guard.linger(tcp):  # a flood of refusals must not hold descriptors either
            tcp.close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # bytes were sent: nothing more can be said
            raise ConnectionError("the answer had begun; the connection is closed")
        error: APIError
        if isinstance(exc, HttpProcessingError) or status == 400:
            log.warning(
                "malformed HTTP request rejected: %s (status %s)", type(exc).__name__, status
            )
            error = InvalidRequestError(
                "the request is not valid HTTP", code="malformed_http_request"
            )
        else:
            log.error("request handler failed (status %s): %s", status, type(exc).__name__)
            error = APIError("internal error; see the gateway's log")
        response = web.Response(
            status=error.status,
            body=error.to_json(),
            content_type="application/json",
            headers={"x-request-id": new_request_id()},
        )
        response.force_close()
        return response


class GuardedServer(web_server.Server):
    """aiohttp's server, making guarded handlers and sweeping their deadlines."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        kwargs["keepalive_timeout"] = limits.idle_timeout_s
        super().__init__(handler, **kwargs)
        self.limits = limits
        self._held: set[GuardedRequestHandler] = set()
        self._lingering = 0
        self._sweeper: asyncio.TimerHandle | None = None

    @classmethod
    def replacing(cls, server: web_server.Server, limits: ConnectionLimits) -> GuardedServer:
        """The same server (the application's handler and settings), guarded."""
        return cls(
            server.request_handler,
            limits=limits,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )

    def __call__(self) -> web_protocol.RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def admit(self, handler: GuardedRequestHandler) -> bool:
        if len(self._held) >= self.limits.max_connections:
            return False
        self._held.add(handler)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.limits.sweep_interval_s, self._sweep)
        return True

    def release(self, handler: GuardedRequestHandler) -> None:
        self._held.discard(handler)

    def linger(self, transport: asyncio.Transport) -> bool:
        """Let a refused connection finish sending its request, for a moment, so that closing it
        does not reset it before the client read its answer. False when too many already do."""
        if self._lingering >= MAX_LINGERING or not transport.can_write_eof():
            return False
        transport.write_eof()
        self._lingering += 1

        def close() -> None:
            self._lingering -= 1
            transport.close()

        self._loop.call_later(REFUSED_LINGER_S, close)
        return True

    def _sweep(self) -> None:
        now = self._loop.time()
        for handler in [h for h in self._held if h.overdue(now)]:
            handler.force_close()
        self._sweeper = (
            self._loop.call_later(self.limits.sweep_interval_s, self._sweep) if self._held else None
        )

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a ``GuardedServer``."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web_server.Server:
        return GuardedServer.replacing(await super()._make_server(), self._limits)
