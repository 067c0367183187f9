"""The application factory and the serve loop.

The HTTP server is aiohttp's, guarded (``server/connections.py``): idle, head and body timeouts,
a connection cap, and parse errors answered in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from passerelle.gateway import Gateway
from passerelle.server.admin import add_admin_routes
from passerelle.server.connections import ConnectionLimits, GuardedAppRunner
from passerelle.server.drill import add_drill_routes
from passerelle.server.errors import error_middleware
from passerelle.server.feedback import add_feedback_routes
from passerelle.server.responses import add_responses_routes
from passerelle.server.routes import GATEWAY, add_routes

log = logging.getLogger("passerelle")


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse with the offending bytes (an oversized
    ``Authorization`` header, say, holds a key), and a body it cannot decode with a traceback
    once the answer is sent: log the kind of error in one line, never the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, web.RequestPayloadError):
            kind, status = type(exc.__cause__ or exc).__name__, 400
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif isinstance(exc, HttpProcessingError):
            kind, status = type(exc).__name__, exc.code
        else:
            return True
        record.msg = "malformed HTTP request rejected: %s (status %s)"
        record.args = (kind, status)
        record.exc_info = None
        record.exc_text = None
        return True


def ensure_descriptors(needed: int) -> None:
    """Client connections and upstream pools need descriptors: raise the soft limit towards the
    hard one if it is short, and say so when even that is not enough (new clients would be
    reset instead of answered)."""
    needed += 64  # the ledger, Redis, the listening socket, logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-file limit (%d) is under what server.max_connections and the upstream "
            "pools may use (%d): lower server.max_connections or raise `ulimit -n`",
            soft,
            needed,
        )


def create_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=gateway.config.server.max_body_bytes,
        handler_args={"max_field_size": 16384},
    )
    app[GATEWAY] = gateway
    add_routes(app)
    add_responses_routes(app)
    add_feedback_routes(app)
    add_admin_routes(app)
    add_drill_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await gateway.start()
        yield
        await gateway.close()

    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(
    gateway: Gateway,
    host: str,
    port: int,
    on_ready: Callable[[str, int], None] | None = None,
    reuse_port: bool = False,
) -> None:
    app = create_app(gateway)
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())
    settings = gateway.config.server
    limits = ConnectionLimits(
        idle_timeout_s=settings.idle_timeout_s,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
    )
    ensure_descriptors(
        limits.max_connections + sum(p.max_connections for p in gateway.config.providers)
    )
    runner = GuardedAppRunner(
        app, limits=limits, access_log=None, handle_signals=False, shutdown_timeout=10
    )
    await runner.setup()
    site = web.TCPSite(
        runner, host, port, backlog=2048, reuse_address=True, reuse_port=reuse_port or None
    )
    await site.start()
    # the start-up heap (pydantic, yaml, click...) never dies: keep it out of full collections,
    # which otherwise stall every request in flight for tens of milliseconds
    gc.collect()
    gc.freeze()
    # the handlers before the word that it is ready: a stop sent at once must drain, not kill
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        bound = runner.addresses[0] if runner.addresses else (host, port)
        on_ready(bound[0], bound[1])
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining requests and the ledger")
        await runner.cleanup()
