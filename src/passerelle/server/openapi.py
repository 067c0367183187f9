"""The OpenAPI description of the gateway's API, served at ``GET /openapi.json``.

It describes what the gateway itself checks, with the same bounds (``pipeline/parse.py``,
``server/admin.py``), so that a client generator or a fuzzer (the project runs schemathesis against
it, ``tests/integration/test_fuzz.py``) knows the contract; fields the gateway passes to the
upstream untouched are allowed as additional properties. The document names no model, tenant or
key: it is the same for every deployment and open to anyone, like ``/health``. A contract test
checks that it lists exactly the routes the server serves.
"""

from __future__ import annotations

from typing import Any

import orjson

from passerelle.months import MONTH_PATTERN
from passerelle.pipeline.parse import MAX_STORED_TEXT, ROLES
from passerelle.tenancy import MAX_TENANT_NAME

VERSION = "1.0.0"
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _answers(ok: str, ok_schema: dict[str, Any], *, status: str = "200") -> dict[str, Any]:
    return {
        status: {"description": ok, "content": {JSON: {"schema": ok_schema}}},
        "default": {
            "description": "An error, in OpenAI's shape.",
            "content": {JSON: {"schema": _ref("Error")}},
        },
    }


def _anthropic_answers(ok: str) -> dict[str, Any]:
    return {
        "200": {"description": ok, "content": {JSON: {"schema": _ref("Object")}}},
        "default": {
            "description": "An error, in Anthropic's shape.",
            "content": {JSON: {"schema": _ref("AnthropicError")}},
        },
    }


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


def _header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", **schema},
    }


FEATURE = _header(
    "X-Passerelle-Feature",
    "The product feature this call belongs to (budgets and reports per feature).",
    pattern="^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$",
)
IDEMPOTENCY = _header(
    "Idempotency-Key",
    "A retry with the same key and body gets the first answer, never a second charge.",
    minLength=1,
    maxLength=255,
)
CACHE_CONTROL = _header(
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


def _schemas() -> dict[str, Any]:
    text_part = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string"}},
        "additionalProperties": True,
    }
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": sorted(ROLES)},
            "content": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": text_part},
                    {"type": "null"},
                ]
            },
        },
        "additionalProperties": True,
    }
    stored_text = {"type": "string", "maxLength": MAX_STORED_TEXT}
    token_input = {  # text, texts, or token ids: an embedding's input, a completion's prompt
        "oneOf": [
            {"type": "string"},
            {"type": "array", "minItems": 1, "items": {"type": "string"}},
            {"type": "array", "minItems": 1, "items": {"type": "integer"}},
            {
                "type": "array",
                "minItems": 1,
                "items": {"type": "array", "items": {"type": "integer"}},
            },
        ]
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "additionalProperties": False,
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "additionalProperties": True,
            "properties": {
                "model": {"type": "string", "minLength": 1, "maxLength": MAX_STORED_TEXT},
                "messages": {"type": "array", "minItems": 1, "items": message},
                "stream": {"type": "boolean"},
                "stream_options": {
                    "type": "object",
                    "properties": {"include_usage": {"type": "boolean"}},
                },
                "max_tokens": {"type": "integer", "minimum": 1},
                "max_completion_tokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
                "n": {"type": "integer", "minimum": 1, "maximum": 128},
                "user": stored_text,
                "metadata": {"type": "object", "additionalProperties": True},
            },
        },
        "CompletionRequest": {
            "type": "object",
            "required": ["model", "prompt"],
            "additionalProperties": True,
            "properties": {
                "model": {"type": "string", "minLength": 1, "maxLength": MAX_STORED_TEXT},
                "prompt": token_input,
                "stream": {"type": "boolean"},
                "stream_options": {
                    "type": "object",
                    "properties": {"include_usage": {"type": "boolean"}},
                },
                "max_tokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "n": {"type": "integer", "minimum": 1, "maximum": 128},
                "user": stored_text,
            },
        },
        "FeedbackRequest": {
            "type": "object",
            "required": ["request_id", "score"],
            "additionalProperties": True,
            "properties": {
                "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "label": {"type": "string", "maxLength": 256},
            },
        },
        "EmbeddingsRequest": {
            "type": "object",
            "required": ["model", "input"],
            "additionalProperties": True,
            "properties": {
                "model": {"type": "string", "minLength": 1, "maxLength": MAX_STORED_TEXT},
                "input": token_input,
                "user": stored_text,
            },
        },
        "ResponsesRequest": {
            "type": "object",
            "required": ["model", "input"],
            "additionalProperties": True,
            "properties": {
                "model": {"type": "string", "minLength": 1, "maxLength": MAX_STORED_TEXT},
                "input": {
                    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]
                },
                "instructions": {"type": "string"},
                "previous_response_id": {"type": "string", "minLength": 1},
                "store": {"type": "boolean"},
                "stream": {"type": "boolean"},
                "max_output_tokens": {"type": "integer", "minimum": 1},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                "user": stored_text,
                "metadata": {"type": "object", "additionalProperties": True},
            },
        },
        "Object": {"type": "object", "additionalProperties": True},
        "AnthropicError": {
            "type": "object",
            "required": ["type", "error"],
            "additionalProperties": False,
            "properties": {
                "type": {"type": "string", "enum": ["error"]},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "additionalProperties": False,
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
        "MessagesRequest": {
            "type": "object",
            "required": ["model", "messages", "max_tokens"],
            "properties": {
                "model": {"type": "string", "minLength": 1, "maxLength": MAX_STORED_TEXT},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"type": "string", "enum": ["user", "assistant"]},
                            "content": {
                                "oneOf": [
                                    {"type": "string"},
                                    {"type": "array", "items": text_part},
                                ]
                            },
                        },
                    },
                },
                "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": text_part}]},
                "stream": {"type": "boolean"},
            },
            "additionalProperties": True,
        },
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


def _paths() -> dict[str, Any]:
    tenant: list[dict[str, list[str]]] = [{"tenantKey": []}]
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    obj = _ref("Object")
    return {
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY, CACHE_CONTROL],
                "requestBody": _json_body(_ref("ChatCompletionRequest")),
                "responses": _answers("A chat completion, or an SSE stream of chunks.", obj),
            }
        },
        "/v1/completions": {
            "post": {
                "operationId": "createCompletion",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY],
                "requestBody": _json_body(_ref("CompletionRequest")),
                "responses": _answers("A text completion, or an SSE stream of chunks.", obj),
            }
        },
        "/v1/embeddings": {
            "post": {
                "operationId": "createEmbedding",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY],
                "requestBody": _json_body(_ref("EmbeddingsRequest")),
                "responses": _answers("Embeddings.", obj),
            }
        },
        "/v1/messages": {
            "post": {
                "operationId": "createMessage",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY, CACHE_CONTROL],
                "requestBody": _json_body(_ref("MessagesRequest")),
                "responses": _anthropic_answers(
                    "Anthropic's Messages API: a message, or its SSE event stream."
                ),
            }
        },
        "/v1/messages/count_tokens": {
            "post": {
                "operationId": "countMessageTokens",
                "security": tenant,
                "requestBody": _json_body(_ref("MessagesRequest")),
                "responses": _anthropic_answers("The gateway's estimate: {input_tokens}."),
            }
        },
        "/v1/feedback": {
            "post": {
                "operationId": "createFeedback",
                "security": tenant,
                "requestBody": _json_body(_ref("FeedbackRequest")),
                "responses": _answers("The score recorded against the call.", obj),
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "security": tenant,
                "responses": _answers("The models this gateway routes.", obj),
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "security": tenant,
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": _answers("One model this gateway routes.", obj),
            }
        },
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY, CACHE_CONTROL],
                "requestBody": _json_body(_ref("ResponsesRequest")),
                "responses": _answers(
                    "A response (OpenAI's Responses API), or its SSE stream of typed events.", obj
                ),
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "retrieveResponse",
                "security": tenant,
                "parameters": [
                    {
                        "name": "response_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }
                ],
                "responses": _answers("A response this gateway kept, for its own tenant.", obj),
            }
        },
        "/health": {
            "get": {"operationId": "health", "security": [], "responses": _answers("Up.", obj)}
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "responses": _answers("This document.", obj),
            }
        },
        "/admin/usage": {
            "get": {
                "operationId": "adminUsage",
                "security": admin,
                "parameters": [
                    _query("group_by", "Comma-separated columns to group by.", maxLength=200),
                    _query("since", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                    _query("until", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                ],
                "responses": _answers("Usage, grouped; costs to the pico-dollar.", obj),
            }
        },
        "/admin/savings": {
            "get": {
                "operationId": "adminSavings",
                "security": admin,
                "parameters": [
                    _query("group_by", "Comma-separated columns to group by.", maxLength=200),
                    _query("since", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                    _query("until", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                ],
                "responses": _answers(
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
                    _query("since", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                    _query("until", "ISO date or time, or a span like 24h, 7d, 30m.", **TIME),
                ],
                "responses": _answers(
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
                "requestBody": _json_body(_ref("DrillRequest")),
                "responses": _answers(
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
                "parameters": [_query("period", "A month, YYYY-MM.", pattern=PERIOD["pattern"])],
                "responses": _answers(
                    "Margins per tenant for the month; money to the pico-dollar.", obj
                ),
            }
        },
        "/admin/revenue": {
            "get": {
                "operationId": "adminListRevenue",
                "security": admin,
                "responses": _answers("Recorded revenue; amounts to the pico-dollar.", obj),
            },
            "post": {
                "operationId": "adminRecordRevenue",
                "security": admin,
                "requestBody": _json_body(
                    {
                        "oneOf": [
                            _ref("RevenueEntry"),
                            {"type": "array", "minItems": 1, "items": _ref("RevenueEntry")},
                        ]
                    }
                ),
                "responses": _answers("Recorded.", obj, status="201"),
            },
        },
        "/admin/keys": {
            "get": {
                "operationId": "adminListKeys",
                "security": admin,
                "parameters": [_query("tenant", "Only this tenant's keys.", maxLength=64)],
                "responses": _answers("Keys (ids, never the keys).", obj),
            },
            "post": {
                "operationId": "adminCreateKey",
                "security": admin,
                "requestBody": _json_body(_ref("KeyRequest")),
                "responses": _answers("The new key, shown once.", obj, status="201"),
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Passerelle",
            "version": VERSION,
            "description": (
                "An OpenAI-compatible LLM gateway with budgets (that also speaks Anthropic's "
                "Messages API), and its admin API. The admin API "
                "gives money (`cost_usd`, `saved_usd`, `llm_cost_usd`, `revenue_usd`, "
                "`gross_margin_usd`, "
                "`amount`) as decimal strings to the pico-dollar, as the ledger stores it "
                "(`0.000123450000`); only shares and percentages are rounded."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "tenantKey": {"type": "http", "scheme": "bearer", "description": "A tenant key."},
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token.",
                },
            },
        },
    }


def openapi_json() -> bytes:
    return orjson.dumps(openapi_document())
