"""JSON answers from the embedded engine: a response format as a grammar the sampler obeys.

A client that asks for ``response_format`` ``json_object`` or ``json_schema`` parses what comes
back; a small model asked nicely still writes prose. llama.cpp can constrain sampling to a
grammar (GBNF), and ``llama-cpp-python`` converts a JSON schema into one, so the engine can only
produce text the schema accepts: the answer is valid JSON of that shape, or it is cut by
``max_tokens`` (finish reason ``length``, as OpenAI reports it). The request's messages also get
one system line naming the format, so that what the model writes inside the grammar makes sense.
A schema the converter cannot handle is the client's to fix: 400, ``param`` ``response_format``.
Grammars are built on the engine thread and kept per schema, as a client sends the same schema
with every call.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson


class UnsupportedSchemaError(ValueError):
    """The JSON schema of a response format cannot be turned into a grammar."""


def json_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's JSON response format, None for text."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return fmt
    return None


def schema_of(fmt: dict[str, Any]) -> dict[str, Any] | None:
    spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def instruction(fmt: dict[str, Any]) -> str:
    """The system line that tells the model what to write."""
    schema = schema_of(fmt)
    if schema is None:
        return "Answer with a JSON object only."
    return (
        "Answer with a JSON object only, following this JSON schema: "
        + orjson.dumps(schema).decode()
    )


def instructed(messages: list[Any], fmt: dict[str, Any]) -> list[Any]:
    """The messages with the format's instruction after the client's own system messages."""
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], dict):
        if messages[lead].get("role") not in ("system", "developer"):
            break
        lead += 1
    line = {"role": "system", "content": instruction(fmt)}
    return [*messages[:lead], line, *messages[lead:]]


def grammar_key(fmt: dict[str, Any]) -> str:
    """What the grammar depends on: the schema's text (empty for any JSON object)."""
    schema = schema_of(fmt)
    return "" if schema is None else orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()


@functools.lru_cache(maxsize=64)
def grammar(key: str) -> Any:
    """The llama.cpp grammar of a schema (``grammar_key``); on the engine thread."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

    if not key:
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        text = json_schema_to_gbnf(key)
        return LlamaGrammar.from_string(text, verbose=False)
    except Exception as exc:  # the converter asserts on what it does not know
        raise UnsupportedSchemaError(f"the JSON schema cannot be enforced: {exc}") from exc
