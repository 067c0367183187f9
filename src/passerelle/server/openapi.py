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

from passerelle.pipeline.parse import MAX_STORED_TEXT, ROLES
from passerelle.server.openapi_admin import admin_paths, admin_schemas
from passerelle.server.openapi_parts import (
    CACHE_CONTROL,
    FEATURE,
    IDEMPOTENCY,
    answers,
    anthropic_answers,
    json_body,
    ref,
)

VERSION = "1.0.0"


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
        **admin_schemas(),
    }


def _paths() -> dict[str, Any]:
    tenant: list[dict[str, list[str]]] = [{"tenantKey": []}]
    obj = ref("Object")
    return {
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY, CACHE_CONTROL],
                "requestBody": json_body(ref("ChatCompletionRequest")),
                "responses": answers("A chat completion, or an SSE stream of chunks.", obj),
            }
        },
        "/v1/completions": {
            "post": {
                "operationId": "createCompletion",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY],
                "requestBody": json_body(ref("CompletionRequest")),
                "responses": answers("A text completion, or an SSE stream of chunks.", obj),
            }
        },
        "/v1/embeddings": {
            "post": {
                "operationId": "createEmbedding",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY],
                "requestBody": json_body(ref("EmbeddingsRequest")),
                "responses": answers("Embeddings.", obj),
            }
        },
        "/v1/messages": {
            "post": {
                "operationId": "createMessage",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY, CACHE_CONTROL],
                "requestBody": json_body(ref("MessagesRequest")),
                "responses": anthropic_answers(
                    "Anthropic's Messages API: a message, or its SSE event stream."
                ),
            }
        },
        "/v1/messages/count_tokens": {
            "post": {
                "operationId": "countMessageTokens",
                "security": tenant,
                "requestBody": json_body(ref("MessagesRequest")),
                "responses": anthropic_answers("The gateway's estimate: {input_tokens}."),
            }
        },
        "/v1/feedback": {
            "post": {
                "operationId": "createFeedback",
                "security": tenant,
                "requestBody": json_body(ref("FeedbackRequest")),
                "responses": answers("The score recorded against the call.", obj),
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "security": tenant,
                "responses": answers("The models this gateway routes.", obj),
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "security": tenant,
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": answers("One model this gateway routes.", obj),
            }
        },
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "security": tenant,
                "parameters": [FEATURE, IDEMPOTENCY, CACHE_CONTROL],
                "requestBody": json_body(ref("ResponsesRequest")),
                "responses": answers(
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
                "responses": answers("A response this gateway kept, for its own tenant.", obj),
            }
        },
        "/health": {
            "get": {"operationId": "health", "security": [], "responses": answers("Up.", obj)}
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "responses": answers("This document.", obj),
            }
        },
        **admin_paths(),
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
