"""``POST /v1/feedback``: a tenant scores a call it made, so the router can learn from it.

The body is ``{"request_id": "...", "score": 0..1, "label": "..."}`` (label optional, at most
``MAX_LABEL`` characters); the request id is the ``x-request-id`` the call was answered with. A
call is found in the ledger, never in memory, so feedback works on any replica and after a
restart. A request id the ledger does not hold, or that another tenant's key made, is the same
404: a tenant learns nothing of other tenants' calls. A call that was not served (refused,
failed) is a 400. A second score for the same call replaces the first. Every error is
OpenAI-shaped JSON, like every other route's.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from passerelle.errors import InvalidRequestError, NotFoundError
from passerelle.pipeline.auth import Auth
from passerelle.pipeline.context import Call
from passerelle.pipeline.parse import load_json_object
from passerelle.server.body import read_body
from passerelle.server.errors import REQUEST_ID
from passerelle.server.routes import GATEWAY
from passerelle.store.records import Status

MAX_LABEL = 256
MAX_REQUEST_ID = 128
SERVED = {Status.OK, Status.CLIENT_DISCONNECTED, Status.UPSTREAM_CUT, Status.REPLAYED}


def _fields(body: dict[str, Any]) -> tuple[str, float, str | None]:
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise InvalidRequestError(
            f"request_id must be the x-request-id of a call (a string of 1 to {MAX_REQUEST_ID} "
            "characters)",
            param="request_id",
            code="invalid_request_id",
        )
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise InvalidRequestError(
            "score must be a number from 0 to 1", param="score", code="invalid_score"
        )
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
        raise InvalidRequestError(
            f"label must be a string of at most {MAX_LABEL} characters",
            param="label",
            code="invalid_label",
        )
    return request_id, float(score), label


async def feedback(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    call = Call(
        endpoint="feedback",
        headers=request.headers,
        raw_body=await read_body(request),
        request_id=request[REQUEST_ID],
    )
    await Auth(gateway.keys)(call, _noop)
    request_id, score, label = _fields(load_json_object(call.raw_body))
    tenant = call.tenant
    assert tenant is not None
    rows = [r for r in await gateway.ledger.records(request_id) if r.tenant == tenant]
    if not rows:
        raise NotFoundError(
            f"no call with request id '{request_id}' was made with this tenant's keys",
            param="request_id",
            code="request_not_found",
        )
    served = [r for r in rows if r.status in SERVED]
    if not served:
        raise InvalidRequestError(
            f"the call '{request_id}' was not served ({rows[-1].status}); only answers are scored",
            param="request_id",
            code="call_not_served",
        )
    await gateway.ledger.record_feedback(request_id, tenant, score, label)
    row = served[-1]
    body = {
        "object": "feedback",
        "request_id": request_id,
        "score": score,
        "label": label,
        "model": row.routed_to or row.model,
    }
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"x-request-id": call.request_id},
    )


async def _noop(call: Call) -> None:
    return None


def add_feedback_routes(app: web.Application) -> None:
    app.router.add_post("/v1/feedback", feedback)
