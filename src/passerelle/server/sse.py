"""Writing a stream to the client as Server-Sent Events: bytes only.

The events come off the answer path (``pipeline/answer.py``), where the stages' observers (the
meter's count among them) and transformers have seen them; this module writes them, one task per
request and no task per event, events that arrived together in one write. When the client goes
away, a remote provider's stream is read on to its end (it bills the whole answer, and the path
still sees it), a local engine is stopped; either way the call is metered. When the upstream
breaks, or a transformer fails, after bytes were sent, the status can no longer change: a final
``data: {"error": ...}`` event is sent instead (in the call's dialect: ``Dialect.error_event``).
An event with a name (``StreamChunk.event``) is written ``event: <name>`` first. The ledger commit
happens before the end of the stream (``data: [DONE]`` in OpenAI's dialect).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from passerelle.errors import APIError, ProviderError
from passerelle.pipeline.answer import AnswerStream
from passerelle.pipeline.context import Call
from passerelle.store.records import Status

log = logging.getLogger("passerelle.server")


async def write_stream(
    request: web.Request, call: Call, stream: AnswerStream, headers: dict[str, str]
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
    error: APIError | None = None
    out = bytearray()  # events that arrived together leave together: one write, one syscall
    try:
        # preparing writes the status line: a client that already left fails it, and the stream
        # must still be closed (or drained) and the call metered, so it is inside this block
        connected = await _pump(request, response, call, stream, out)
    except ProviderError as exc:
        connected = _still_there(response, call)
        error = exc.to_api_error()
        call.status = Status.UPSTREAM_CUT
        call.error = error
    except APIError as exc:  # a stage refused the answer on its way: the call fails, in its terms
        connected = _still_there(response, call)
        error = exc
        call.fail(error)
    except Exception:  # our own bug: still metered, still answered in the stream's own terms
        log.exception("stream of %s failed", call.request_id)
        connected = _still_there(response, call)
        error = APIError("internal error; see the gateway's log")
        call.fail(error)
    finally:
        try:
            await stream.aclose()
        finally:
            error = await _finish(call) or error
    if connected:
        try:
            dialect = call.dialect
            out += dialect.done if error is None else dialect.error_event(error)
            await response.write(bytes(out))
            await response.write_eof()
        except ConnectionError:
            pass
    return response


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    call: Call,
    stream: AnswerStream,
    out: bytearray,
) -> bool:
    """Write the stream's events; True while the client is still there at the end."""
    connected = True
    try:
        await response.prepare(request)
    except ConnectionError:
        connected = _gone(call)
        if not stream.drain_on_disconnect:
            return connected
    async for chunk in stream:
        if not connected:
            continue
        if chunk.forward:
            if chunk.event is not None:
                out += b"event: %s\n" % chunk.event
            out += b"data: %s\n\n" % chunk.data
        if chunk.more or not out:
            continue
        try:
            await response.write(bytes(out))
            out.clear()
        except ConnectionError:
            connected = _gone(call)
            if not stream.drain_on_disconnect:
                break
    return connected


def _still_there(response: web.StreamResponse, call: Call) -> bool:
    """After the stream failed: may the final error event still be written to the client?"""
    return response.prepared and call.status != Status.CLIENT_DISCONNECTED


def _gone(call: Call) -> bool:
    """The client went away: an ordinary event, not an error; the call is metered as such."""
    call.status = Status.CLIENT_DISCONNECTED
    return False


async def _finish(call: Call) -> APIError | None:
    """The call's deferred work (the ledger commit); it runs even when the handler is cancelled."""
    try:
        await asyncio.shield(call.finish())
    except asyncio.CancelledError:
        raise
    except Exception:
        log.error("usage of %s could not be recorded", call.request_id)
        return APIError("usage could not be recorded; the answer is incomplete")
    return None
