"""The admin API: usage read-out and key management, behind the admin token only.

A tenant key never opens these routes, whatever tenant it belongs to. With no admin token
configured, the admin API answers 403 to everyone.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from passerelle.economics.margins import margins
from passerelle.economics.revenue import revenue_entry
from passerelle.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from passerelle.pipeline.auth import bearer
from passerelle.pricing.cost import format_usd, usd_report
from passerelle.server.routes import GATEWAY
from passerelle.store.query import parse_group_by, parse_when
from passerelle.tenancy import ApiKey, key_digest, key_id_for, new_key

MICRO = Decimal("0.000001")


def require_admin(request: web.Request) -> None:
    gateway = request.app[GATEWAY]
    token = bearer(request.headers)
    if token is None:
        raise AuthenticationError("admin routes need 'Authorization: Bearer <admin token>'")
    if gateway.admin_token is None or not hmac.compare_digest(
        token.encode(), gateway.admin_token.encode()
    ):
        raise PermissionDeniedError("this key may not use the admin API")


async def usage(request: web.Request) -> web.Response:
    require_admin(request)
    q = request.query
    group_by = parse_group_by(q.get("group_by"))
    since = parse_when(q.get("since"), "since")
    until = parse_when(q.get("until"), "until")
    rows = await request.app[GATEWAY].ledger.usage(group_by, since, until)
    data = [r.as_json() for r in rows]
    totals = {
        "requests": sum(r.requests for r in rows),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
        "cost_usd": usd_report(sum((r.cost_usd for r in rows), Decimal(0))),
        "unpriced_requests": sum(r.unpriced_requests for r in rows),
    }
    body = {
        "object": "usage",
        "group_by": group_by,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "data": data,
        "totals": totals,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def read_json(request: web.Request, empty: bytes) -> Any:
    try:
        return orjson.loads(await request.read() or empty)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("request body is not valid JSON", code="invalid_json") from None


async def create_key(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_json(request, b"{}")
    tenant = body.get("tenant") if isinstance(body, dict) else None
    if not isinstance(tenant, str) or not tenant:
        raise InvalidRequestError("tenant is required", param="tenant")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequestError("name must be a string", param="name", code="invalid_type")
    gateway = request.app[GATEWAY]
    secret = new_key()
    digest = key_digest(secret)
    key = ApiKey(key_id=key_id_for(digest), tenant=tenant, digest=digest, name=name)
    await gateway.ledger.create_key(key)
    gateway.keys.add(key)
    return web.json_response({"key": secret, "key_id": key.key_id, "tenant": tenant}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    keys = await request.app[GATEWAY].ledger.list_keys(request.query.get("tenant"))
    return web.json_response(
        {
            "object": "list",
            "data": [{"key_id": k.key_id, "tenant": k.tenant, "name": k.name} for k in keys],
        }
    )


async def get_margins(request: web.Request) -> web.Response:
    require_admin(request)
    gateway = request.app[GATEWAY]
    period = request.query.get("period") or datetime.now(UTC).strftime("%Y-%m")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise InvalidRequestError("period must be YYYY-MM", param="period")
    rows = await margins(gateway.ledger, gateway.revenue, period)
    return web.Response(
        body=orjson.dumps(
            {"object": "margins", "period": period, "data": [r.as_json() for r in rows]}
        ),
        content_type="application/json",
    )


async def post_revenue(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_json(request, b"null")
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) for i in items):
        raise InvalidRequestError("send an object {tenant, period, amount, currency} or a list")
    entries = [
        revenue_entry({k: str(v) for k, v in i.items() if v is not None}, f"item {n}")
        for n, i in enumerate(items)
    ]
    gateway = request.app[GATEWAY]
    await gateway.ledger.set_revenue(entries)
    for e in entries:
        gateway.revenue.record(e)
    return web.json_response({"object": "list", "recorded": len(entries)}, status=201)


async def get_revenue(request: web.Request) -> web.Response:
    require_admin(request)
    entries = await request.app[GATEWAY].ledger.list_revenue()
    return web.Response(
        body=orjson.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "tenant": e.tenant,
                        "period": e.period,
                        "amount": format_usd(e.amount),
                        "currency": e.currency,
                        "source": e.source,
                    }
                    for e in entries
                ],
            }
        ),
        content_type="application/json",
    )


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/margins", get_margins)
    app.router.add_get("/admin/revenue", get_revenue)
    app.router.add_post("/admin/revenue", post_revenue)
    app.router.add_get("/admin/usage", usage)
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
