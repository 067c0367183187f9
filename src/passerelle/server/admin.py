"""The admin API: usage and savings read-out and key management, behind the admin token only.

A tenant key never opens these routes, whatever tenant it belongs to. With no admin token
configured, no credential opens it. A missing or wrong credential is 401 (``authentication_error``);
403 is kept for a valid credential without the right: a tenant's key.

Every parameter is bounded before it is used: times within 1970 to 2999 (``since``/``until``, as an
ISO date or a span of at most six digits), months likewise, revenue amounts as ``revenue`` allows,
key names of at most ``MAX_KEY_NAME`` characters. A key is only created for a tenant that exists
(declared in the configuration, or holding keys already) unless ``"create_tenant": true`` asks
for a new one, which then has no budget and no rate limit: the answer says so.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from passerelle.economics.margins import margins
from passerelle.economics.revenue import revenue_entry
from passerelle.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from passerelle.months import check_month, month_of
from passerelle.pipeline.auth import bearer
from passerelle.pipeline.parse import CONTROL_RE, MAX_JSON_DEPTH, deepest_field
from passerelle.pricing.cost import usd_exact
from passerelle.server.body import read_body
from passerelle.server.routes import GATEWAY
from passerelle.store.query import parse_group_by, parse_when
from passerelle.store.savings import combined
from passerelle.tenancy import ApiKey, key_digest, key_id_for, new_key, tenant_name_problem

MICRO = Decimal("0.000001")
MAX_KEY_NAME = 128


async def require_admin(request: web.Request) -> None:
    gateway = request.app[GATEWAY]
    token = bearer(request.headers)
    if token is None:
        raise AuthenticationError("admin routes need 'Authorization: Bearer <admin token>'")
    if gateway.admin_token is not None and hmac.compare_digest(
        token.encode(), gateway.admin_token.encode()
    ):
        return
    if await gateway.keys.authenticate(token) is not None:
        raise PermissionDeniedError("this key may not use the admin API")
    raise AuthenticationError("invalid admin token")


async def usage(request: web.Request) -> web.Response:
    await require_admin(request)
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
        "cost_usd": usd_exact(sum((r.cost_usd for r in rows), Decimal(0))),
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


async def savings(request: web.Request) -> web.Response:
    """What the cache (and any other source of savings) saved, against what was paid: per
    tenant, feature, model, day or month (``store/savings.py``)."""
    await require_admin(request)
    q = request.query
    group_by = parse_group_by(q.get("group_by"))
    since = parse_when(q.get("since"), "since")
    until = parse_when(q.get("until"), "until")
    rows = await request.app[GATEWAY].ledger.savings(group_by, since, until)
    totals = combined(rows).as_json()
    body = {
        "object": "savings",
        "group_by": group_by,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "data": [r.as_json() for r in rows],
        "totals": totals,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def read_json(request: web.Request, empty: bytes) -> Any:
    raw = await read_body(request) or empty
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("request body is not valid JSON", code="invalid_json") from None
    items = body if isinstance(body, list) else [body]
    for item in items:
        deep = deepest_field(item, MAX_JSON_DEPTH) if isinstance(item, dict) else None
        if deep is not None:
            raise InvalidRequestError(f"{deep} is nested too deep", param=deep, code="invalid_json")
    return body


def key_name(body: dict[str, Any]) -> str | None:
    name = body.get("name")
    if name is None:
        return None
    if not isinstance(name, str):
        raise InvalidRequestError("name must be a string", param="name", code="invalid_type")
    if len(name) > MAX_KEY_NAME:
        raise InvalidRequestError(
            f"name must be at most {MAX_KEY_NAME} characters",
            param="name",
            code="string_above_max_length",
        )
    if CONTROL_RE.search(name):
        raise InvalidRequestError("name must not contain control characters", param="name")
    return name


def declared(request: web.Request) -> list[str]:
    return sorted(t.name for t in request.app[GATEWAY].config.tenants)


async def create_key(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json(request, b"{}")
    tenant = body.get("tenant") if isinstance(body, dict) else None
    if not isinstance(tenant, str) or not tenant:
        raise InvalidRequestError("tenant is required", param="tenant")
    name = key_name(body)
    create = body.get("create_tenant", False)
    if not isinstance(create, bool):
        raise InvalidRequestError(
            "create_tenant must be a boolean", param="create_tenant", code="invalid_type"
        )
    created = False
    if tenant not in declared(request):
        # checked before the ledger is asked: a name no tenant can have is not looked up
        problem = tenant_name_problem(tenant)
        if problem is not None:
            raise InvalidRequestError(problem, param="tenant")
        if not await request.app[GATEWAY].ledger.list_keys(tenant):
            if not create:
                raise InvalidRequestError(
                    f"unknown tenant {tenant!r}; the configuration declares: "
                    f'{", ".join(declared(request)) or "none"}. Send "create_tenant": true to '
                    "create it (it will have no budgets or rate limits)",
                    param="tenant",
                    code="unknown_tenant",
                )
            created = True
    gateway = request.app[GATEWAY]
    secret = new_key()
    digest = key_digest(secret)
    key = ApiKey(key_id=key_id_for(digest), tenant=tenant, digest=digest, name=name)
    await gateway.ledger.create_key(key)
    gateway.keys.add(key)
    answer: dict[str, Any] = {
        "key": secret,
        "key_id": key.key_id,
        "tenant": tenant,
        "tenant_created": created,
    }
    if created:
        answer["warning"] = (
            f"tenant {tenant} was created with no budgets and no rate limits; declare it in the "
            "configuration to give it some"
        )
    return web.json_response(answer, status=201)


async def list_keys(request: web.Request) -> web.Response:
    await require_admin(request)
    tenant = request.query.get("tenant")
    if tenant is not None and (len(tenant) > 256 or CONTROL_RE.search(tenant)):
        raise InvalidRequestError(
            "tenant must be at most 256 characters, without control characters", param="tenant"
        )
    keys = await request.app[GATEWAY].ledger.list_keys(tenant)
    return web.json_response(
        {
            "object": "list",
            "data": [{"key_id": k.key_id, "tenant": k.tenant, "name": k.name} for k in keys],
        }
    )


async def get_margins(request: web.Request) -> web.Response:
    await require_admin(request)
    gateway = request.app[GATEWAY]
    period = check_month(request.query.get("period") or month_of(datetime.now(UTC)))
    rows = await margins(gateway.ledger, gateway.revenue, period)
    return web.Response(
        body=orjson.dumps(
            {"object": "margins", "period": period, "data": [r.as_json() for r in rows]}
        ),
        content_type="application/json",
    )


def revenue_row(item: dict[str, Any], where: str) -> dict[str, str]:
    """An admin API revenue item as the text fields ``revenue_entry`` checks."""
    row: dict[str, str] = {}
    for field in ("tenant", "period", "currency"):
        v = item.get(field)
        if v is not None and not isinstance(v, str):
            raise InvalidRequestError(
                f"{where}: {field} must be a string", param=field, code="invalid_type"
            )
        if v is not None:
            row[field] = v
    amount = item.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, str | int | float):
        raise InvalidRequestError(
            f"{where}: amount must be a number or a decimal string", param="amount"
        )
    row["amount"] = str(amount)
    return row


async def post_revenue(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json(request, b"null")
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) for i in items):
        raise InvalidRequestError("send an object {tenant, period, amount, currency} or a list")
    if len(items) > 10_000:
        raise InvalidRequestError("send at most 10000 revenue entries at once")
    entries = [revenue_entry(revenue_row(i, f"item {n}"), f"item {n}") for n, i in enumerate(items)]
    gateway = request.app[GATEWAY]
    await gateway.ledger.set_revenue(entries)
    for e in entries:
        gateway.revenue.record(e)
    return web.json_response({"object": "list", "recorded": len(entries)}, status=201)


async def get_revenue(request: web.Request) -> web.Response:
    await require_admin(request)
    entries = await request.app[GATEWAY].ledger.list_revenue()
    return web.Response(
        body=orjson.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "tenant": e.tenant,
                        "period": e.period,
                        "amount": usd_exact(e.amount),
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
    app.router.add_get("/admin/savings", savings)
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
