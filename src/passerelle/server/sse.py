"""Writing a stream to the client as Server-Sent Events.

One task per request, no task per chunk. Usage events are read for accounting as they pass. When
the client goes away, a remote provider's stream is read on to its end (it bills the whole answer),
a local engine is stopped; either way the call is metered. When the upstream breaks after bytes
were sent, the status can no longer change: a final ``data: {"error": ...}`` event is sent instead.
The ledger commit happens before ``data: [DONE]``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from passerelle.errors import APIError, ProviderError
from passerelle.pipeline.context import Call, ChunkStream

log = logging.getLogger("passerelle.server")

DONE = b"data: [DONE]\n\n"


async def write_stream(
    request: web.Request, call: Call, stream: ChunkStream, headers: dict[str, str]
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **headers,
        },
    )
    await response.prepare(request)
    connected = True
    error: APIError | None = None
    out = bytearray()  # events that arrived together leave together: one write, one syscall
    try:
        async for chunk in stream:
            call.chunks += 1
            call.content_chars += chunk.content_chars
            if chunk.usage is not None:
                call.usage = chunk.usage
            if not connected:
                continue
            if chunk.forward:
                out += b"data: " + chunk.data + b"\n\n"
            if chunk.more or not out:
                continue
            try:
                await response.write(bytes(out))
                out.clear()
            except ConnectionError:
                connected = False
                call.status = "client_disconnected"
                if not stream.drain_on_disconnect:
                    break
    except ProviderError as exc:
        error = exc.to_api_error()
        call.status = "upstream_cut"
        call.error = error
    except Exception:  # our own bug: still metered, still answered in the stream's own terms
        log.exception("stream of %s failed", call.request_id)
        error = APIError("internal error; see the gateway's log")
        call.fail(error)
    finally:
        await stream.aclose()
    try:
        await call.finish()
    except Exception:
        log.error("usage of %s could not be recorded", call.request_id)
        error = error or APIError("usage could not be recorded; the answer is incomplete")
    if connected:
        try:
            if error is not None:
                out += b"data: " + error.to_json() + b"\n\n"
            else:
                out += DONE
            await response.write(bytes(out))
            await response.write_eof()
        except ConnectionError:
            pass
    return response
