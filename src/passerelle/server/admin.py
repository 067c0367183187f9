"""The admin API: usage read-out and key management, behind the admin token only.

A tenant key never opens these routes, whatever tenant it belongs to. With no admin token
configured, the admin API answers 403 to everyone.
"""

from __future__ import annotations

import hmac
import re
from decimal import Decimal
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web

from passerelle.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from passerelle.pipeline.auth import bearer
from passerelle.server.routes import GATEWAY
from passerelle.store.records import GROUP_COLUMNS
from passerelle.tenancy import ApiKey, key_digest, key_id_for, new_key

MICRO = Decimal("0.000001")
RELATIVE = re.compile(r"^(\d+)([hdm])$")


def require_admin(request: web.Request) -> None:
    gateway = request.app[GATEWAY]
    token = bearer(request.headers)
    if token is None:
        raise AuthenticationError("admin routes need 'Authorization: Bearer <admin token>'")
    if gateway.admin_token is None or not hmac.compare_digest(
        token.encode(), gateway.admin_token.encode()
    ):
        raise PermissionDeniedError("this key may not use the admin API")


def parse_when(value: str | None, param: str) -> datetime | None:
    if not value:
        return None
    m = RELATIVE.match(value)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "m": timedelta(minutes=n)}[unit]
        return datetime.now(UTC) - delta
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(
            f"{param} must be an ISO date or time, or a span like 24h or 7d", param=param
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_group_by(value: str | None) -> list[str]:
    if not value:
        return []
    groups = [g.strip() for g in value.split(",") if g.strip()]
    for g in groups:
        if g not in GROUP_COLUMNS:
            raise InvalidRequestError(
                f"group_by accepts {', '.join(GROUP_COLUMNS)}; got {g!r}", param="group_by"
            )
    return groups


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
        "cost_usd": str(sum((r.cost_usd for r in rows), Decimal(0)).quantize(MICRO)),
        "unpriced_requests": sum(r.unpriced_requests for r in rows),
    }
    body = {"object": "usage", "group_by": group_by,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None, "data": data, "totals": totals}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def create_key(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequestError("request body is not valid JSON", code="invalid_json") from None
    tenant = body.get("tenant") if isinstance(body, dict) else None
    if not isinstance(tenant, str) or not tenant:
        raise InvalidRequestError("tenant is required", param="tenant")
    gateway = request.app[GATEWAY]
    secret = new_key()
    digest = key_digest(secret)
    key = ApiKey(key_id=key_id_for(digest), tenant=tenant, digest=digest, name=body.get("name"))
    await gateway.ledger.create_key(key)
    gateway.keys.add(key)
    return web.json_response(
        {"key": secret, "key_id": key.key_id, "tenant": tenant}, status=201
    )


async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    keys = await request.app[GATEWAY].ledger.list_keys(request.query.get("tenant"))
    return web.json_response({"object": "list", "data": [
        {"key_id": k.key_id, "tenant": k.tenant, "name": k.name} for k in keys
    ]})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/usage", usage)
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
