"""Structured output on Anthropic: a JSON response format as a forced tool call.

Anthropic's Messages API has no ``response_format``, and a request that asked for a JSON schema
and got prose would fail in the client, far from its cause. What it has are tools whose input
the model writes to a JSON schema, and a ``tool_choice`` that makes it call one. So a chat
request asking for ``json_schema`` (or ``json_object``) is sent with one more tool,
``ANSWER_TOOL``, whose input schema is the requested one, and the model is made to call it. The
tool's input is the answer: it comes back as the message's content, a JSON string, with finish
reason ``stop``, as OpenAI gives it; in a stream, that tool's ``input_json_delta`` events become
text deltas. A request with tools of its own lets the model call one of them or the answer tool
(``any``), so a real tool call stays a tool call; one that forces a tool of its own is sent as
it is, since that tool call is its answer.
"""

from __future__ import annotations

from typing import Any

import orjson

ANSWER_TOOL = "json_answer"
ANSWER_TOOL_DESCRIPTION = "Give your final answer by calling this tool: its input is the answer."


def answer_tool(response_format: Any) -> dict[str, Any] | None:
    """The tool a JSON response format becomes; None for text (or no format)."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {
            "name": ANSWER_TOOL,
            "description": ANSWER_TOOL_DESCRIPTION,
            "input_schema": {"type": "object"},
        }
    if kind != "json_schema":
        return None
    spec = response_format.get("json_schema")
    spec = spec if isinstance(spec, dict) else {}
    schema = spec.get("schema")
    description = spec.get("description")
    return {
        "name": ANSWER_TOOL,
        "description": description if isinstance(description, str) else ANSWER_TOOL_DESCRIPTION,
        "input_schema": schema if isinstance(schema, dict) else {"type": "object"},
    }


def apply(out: dict[str, Any], response_format: Any) -> bool:
    """Ask for the answer through the answer tool in an Anthropic body; False when the request
    needs no JSON answer or forces a tool of its own."""
    tool = answer_tool(response_format)
    choice = out.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    if tool is None or choice.get("type") == "tool":
        return False
    own = out.get("tools") or []
    forced: dict[str, Any] = (
        {"type": "any"}
        if own and choice.get("type") != "none"
        else {"type": "tool", "name": ANSWER_TOOL}
    )
    if choice.get("disable_parallel_tool_use"):
        forced["disable_parallel_tool_use"] = True
    out["tools"] = [*own, tool]
    out["tool_choice"] = forced
    return True


def unwrap(doc: dict[str, Any]) -> dict[str, Any]:
    """A Messages answer with the answer tool's call as its text."""
    content: list[Any] = []
    calls = 0
    for block in doc.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "tool_use":
            if block.get("name") == ANSWER_TOOL:
                text = orjson.dumps(block.get("input") or {}).decode()
                content.append({"type": "text", "text": text})
                continue
            calls += 1
        content.append(block)
    out = {**doc, "content": content}
    if doc.get("stop_reason") == "tool_use" and not calls:
        out["stop_reason"] = "end_turn"
    return out


class AnswerEvents:
    """Stream events with the answer tool's block as a text block; pure, one per stream."""

    def __init__(self) -> None:
        self._answer: set[Any] = set()  # block indices of the answer tool
        self._calls = 0  # blocks of the request's own tools

    def feed(self, event: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if event == "content_block_start":
            block = data.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use":
                if block.get("name") != ANSWER_TOOL:
                    self._calls += 1
                    return event, data
                self._answer.add(data.get("index"))
                return event, {**data, "content_block": {"type": "text", "text": ""}}
        elif event == "content_block_delta" and data.get("index") in self._answer:
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "input_json_delta":
                text = str(delta.get("partial_json") or "")
                return event, {**data, "delta": {"type": "text_delta", "text": text}}
        elif event == "message_delta" and self._answer and not self._calls:
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") == "tool_use":
                return event, {**data, "delta": {**delta, "stop_reason": "end_turn"}}
        return event, data
