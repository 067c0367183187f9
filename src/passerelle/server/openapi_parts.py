"""The pieces the OpenAPI document is built of: references, bodies, answers, parameters.

Shared by the client API's description (``server/openapi.py``) and the admin API's
(``server/openapi_admin.py``).
"""

from __future__ import annotations

from typing import Any

from passerelle.months import MONTH_PATTERN
from passerelle.tenancy import MAX_TENANT_NAME

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def answers(ok: str, ok_schema: dict[str, Any], *, status: str = "200") -> dict[str, Any]:
    return {
        status: {"description": ok, "content": {JSON: {"schema": ok_schema}}},
        "default": {
            "description": "An error, in OpenAI's shape.",
            "content": {JSON: {"schema": ref("Error")}},
        },
    }


def anthropic_answers(ok: str) -> dict[str, Any]:
    return {
        "200": {"description": ok, "content": {JSON: {"schema": ref("Object")}}},
        "default": {
            "description": "An error, in Anthropic's shape.",
            "content": {JSON: {"schema": ref("AnthropicError")}},
        },
    }


def query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


FEATURE = header(
    "X-Passerelle-Feature",
    "The product feature this call belongs to (budgets and reports per feature).",
    pattern="^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$",
)
IDEMPOTENCY = header(
    "Idempotency-Key",
    "A retry with the same key and body gets the first answer, never a second charge.",
    minLength=1,
    maxLength=255,
)
CACHE_CONTROL = header(
    "Cache-Control",
    "`no-cache`: a fresh answer, which replaces the cached one; `no-store`: not cached "
    "(with `cache.exact` configured).",
    maxLength=200,
)
TIME = {"maxLength": 40}
TENANT = {
    "type": "string",
    "pattern": f"^[A-Za-z0-9][A-Za-z0-9_.@-]{{0,{MAX_TENANT_NAME - 1}}}$",
}
PERIOD = {"type": "string", "pattern": MONTH_PATTERN}
