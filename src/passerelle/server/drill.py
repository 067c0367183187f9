"""``GET /admin/independence`` and ``POST /admin/drill``: how dependent the traffic is on each
provider, and what would happen without one, behind the admin token.

Both read the gateway's configuration and its ledger's usage over the period asked
(``since``/``until``, parsed as every report parses them) and answer what
``sovereignty/independence.py`` and ``sovereignty/drill.py`` compute. ``POST /admin/drill`` with
``"live": true`` also sends each model that keeps a target one synthetic call through the
gateway's own chain, the provider left out (``pipeline/drill.py``): here, in the running
gateway, so that its policy, breakers and fallbacks apply and its ledger meters the calls.
The body is checked before anything is sent: an unknown provider, tenant, model or data class
is a 400 naming the parameter and what is known.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from passerelle.errors import InvalidRequestError
from passerelle.pipeline.drill import drill_chain, sample
from passerelle.pricing.catalogue import Catalogue
from passerelle.server.admin import read_json, require_admin
from passerelle.server.routes import GATEWAY
from passerelle.sovereignty.drill import DRILL_FEATURE, LiveResult, check_provider, drill
from passerelle.sovereignty.independence import REPORT_GROUPS, Topology, independence, topology
from passerelle.store.query import parse_when

MAX_SAMPLES = 5  # synthetic calls per model


def _topology(request: web.Request) -> Topology:
    return topology(request.app[GATEWAY].config, Catalogue.shipped(), datetime.now(UTC).date())


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


async def get_independence(request: web.Request) -> web.Response:
    await require_admin(request)
    since = parse_when(request.query.get("since"), "since")
    until = parse_when(request.query.get("until"), "until")
    rows = await request.app[GATEWAY].ledger.usage(REPORT_GROUPS, since, until)
    report = independence(_topology(request), rows, since=_iso(since), until=_iso(until))
    return web.Response(body=orjson.dumps(report), content_type="application/json")


def _text(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidRequestError(
            f"{name} must be a non-empty string of at most 256 characters", param=name
        )
    return value


def _choice(value: str | None, known: list[str], what: str, param: str) -> None:
    if value is not None and value not in known:
        raise InvalidRequestError(
            f"unknown {what} {value[:64]!r}; known: {', '.join(known) or 'none'}",
            param=param,
            code=f"unknown_{what.replace(' ', '_')}",
        )


def _models(body: dict[str, Any], known: list[str]) -> list[str] | None:
    models = body.get("models")
    if models is None:
        return None
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise InvalidRequestError("models must be a list of model names", param="models")
    for m in models:
        _choice(m, known, "model", "models")
    return list(dict.fromkeys(models))


def _samples(body: dict[str, Any]) -> int:
    n = body.get("samples", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise InvalidRequestError(
            f"samples must be a whole number from 1 to {MAX_SAMPLES}", param="samples"
        )
    return n


async def post_drill(request: web.Request) -> web.Response:
    await require_admin(request)
    body = await read_json(request, b"{}")
    if not isinstance(body, dict):
        raise InvalidRequestError("send an object {without, live, ...}")
    gateway = request.app[GATEWAY]
    topo = _topology(request)
    provider = _text(body, "without", required=True)
    assert provider is not None
    check_provider(topo, provider)
    live = body.get("live", False)
    if not isinstance(live, bool):
        raise InvalidRequestError("live must be a boolean", param="live", code="invalid_type")
    since = parse_when(_text(body, "since"), "since")
    until = parse_when(_text(body, "until"), "until")
    tenant = _text(body, "tenant") or DRILL_FEATURE
    if "tenant" in body:
        _choice(tenant, sorted(t.name for t in gateway.config.tenants), "tenant", "tenant")
    data_class = _text(body, "data_class")
    classes = sorted(topo.policy.classes) if topo.policy is not None else []
    _choice(data_class, classes, "data class", "data_class")
    chosen = _models(body, sorted(topo.models))
    samples = _samples(body)
    results: list[LiveResult] | None = None
    if live:
        chain = drill_chain(gateway.pipeline, provider, tenant)
        results = []
        for model in chosen if chosen is not None else sorted(topo.models):
            if all(t.provider == provider for t in topo.models[model]):
                continue  # broken: nothing left to try, and the report says so
            for _ in range(samples):
                results.append(await sample(chain, model, data_class))
    rows = await gateway.ledger.usage(REPORT_GROUPS, since, until)
    report = drill(topo, provider, rows, since=_iso(since), until=_iso(until), live=results)
    return web.Response(body=orjson.dumps(report), content_type="application/json")


def add_drill_routes(app: web.Application) -> None:
    app.router.add_get("/admin/independence", get_independence)
    app.router.add_post("/admin/drill", post_drill)
