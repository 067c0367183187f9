"""The admin API in the OpenAPI document: reports, revenue, keys and the exit drill.

Every route here needs the admin token; ``server/openapi.py`` puts them in the one document.
"""

from __future__ import annotations

from typing import Any

from passerelle.server.openapi_parts import (
    PERIOD,
    TENANT,
    TIME,
    answers,
    json_body,
    query,
    ref,
)


def admin_schemas() -> dict[str, Any]:
    return {
        "KeyRequest": {
            "type": "object",
            "required": ["tenant"],
            "properties": {
                "tenant": TENANT,
                "name": {"type": "string", "maxLength": 128},
                "create_tenant": {
                    "type": "boolean",
                    "description": "Create the tenant if it does not exist (it has no budgets).",
                },
            },
        },
        "DrillRequest": {
            "type": "object",
            "required": ["without"],
            "properties": {
                "without": {"type": "string", "maxLength": 256, "description": "A provider."},
                "live": {"type": "boolean", "description": "Send synthetic calls too."},
                "since": {"type": "string", **TIME},
                "until": {"type": "string", **TIME},
                "tenant": TENANT,
                "data_class": {"type": "string", "maxLength": 256},
                "models": {"type": "array", "items": {"type": "string", "maxLength": 256}},
                "samples": {"type": "integer", "minimum": 1, "maximum": 5},
            },
        },
        "RevenueEntry": {
            "type": "object",
            "required": ["tenant", "period", "amount"],
            "properties": {
                "tenant": TENANT,
                "period": PERIOD,
                "amount": {
                    "oneOf": [
                        {"type": "number", "minimum": 0, "maximum": 9_000_000},
                        {"type": "string", "pattern": "^[0-9]{1,7}(\\.[0-9]{1,6})?$"},
                    ]
                },
                "currency": {"type": "string", "enum": ["USD"]},
            },
        },
    }


def admin_paths() -> dict[str, Any]:
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    obj = ref("Object")
    return {
        "/admin/usage": {
            "get": {
                "operationId": "adminUsage",
                "security": admin,
                "parameters": [
                    query("group_by", "Comma-separated columns to group by.", maxLength=200),
                    query("since", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                    query("until", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                ],
                "responses": answers("Usage, grouped; costs to the pico-dollar.", obj),
            }
        },
        "/admin/savings": {
            "get": {
                "operationId": "adminSavings",
                "security": admin,
                "parameters": [
                    query("group_by", "Comma-separated columns to group by.", maxLength=200),
                    query("since", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                    query("until", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                ],
                "responses": answers(
                    "Requests, cache hits and hit rate, cost paid, saved (by source) and the "
                    "cost without savings, grouped; money to the pico-dollar.",
                    obj,
                ),
            }
        },
        "/admin/independence": {
            "get": {
                "operationId": "adminIndependence",
                "security": admin,
                "parameters": [
                    query("since", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                    query("until", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                ],
                "responses": answers(
                    "Shares of requests, tokens and spend by provider and jurisdiction, overall "
                    "and per feature, their concentration (HHI) and each model's fallbacks.",
                    obj,
                ),
            }
        },
        "/admin/drill": {
            "post": {
                "operationId": "adminExitDrill",
                "security": admin,
                "requestBody": json_body(ref("DrillRequest")),
                "responses": answers(
                    "What breaks and what moves without the provider; with `live`, the "
                    "synthetic calls' results.",
                    obj,
                ),
            }
        },
        "/admin/margins": {
            "get": {
                "operationId": "adminMargins",
                "security": admin,
                "parameters": [query("period", "A month, YYYY-MM.", pattern=PERIOD["pattern"])],
                "responses": answers(
                    "Margins per tenant for the month; money to the pico-dollar.", obj
                ),
            }
        },
        "/admin/revenue": {
            "get": {
                "operationId": "adminListRevenue",
                "security": admin,
                "responses": answers("Recorded revenue; amounts to the pico-dollar.", obj),
            },
            "post": {
                "operationId": "adminRecordRevenue",
                "security": admin,
                "requestBody": json_body(
                    {
                        "oneOf": [
                            ref("RevenueEntry"),
                            {"type": "array", "minItems": 1, "items": ref("RevenueEntry")},
                        ]
                    }
                ),
                "responses": answers("Recorded.", obj, status="201"),
            },
        },
        "/admin/keys": {
            "get": {
                "operationId": "adminListKeys",
                "security": admin,
                "parameters": [query("tenant", "Only this tenant's keys.", maxLength=64)],
                "responses": answers("Keys (ids, never the keys).", obj),
            },
            "post": {
                "operationId": "adminCreateKey",
                "security": admin,
                "requestBody": json_body(ref("KeyRequest")),
                "responses": answers("The new key, shown once.", obj, status="201"),
            },
        },
    }
