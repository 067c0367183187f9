"""A Responses API request (``POST /v1/responses``) as a chat-completions body, as pure functions.

Inside the gateway every call is a chat-completions body; ``to_chat`` is the Responses edge of it:
``instructions`` become the system message, ``input`` (a string or a list of items) becomes
messages (message items with ``input_text`` / ``input_image`` / ``output_text`` parts,
``function_call`` items an assistant message's ``tool_calls``, ``function_call_output`` items
``tool`` messages), function tools and ``tool_choice`` their chat forms, ``text.format`` chat's
``response_format``, ``max_output_tokens`` the output limit. What a chat upstream cannot be asked
(hosted tools, background runs, server-side conversations, other item kinds) is refused with a
400 naming the field in the Responses API's own terms, never dropped.

``previous_response_id`` is not resolved here (it needs the conversation store,
``pipeline/conversation.py``): ``to_chat`` translates the turn it is given, and
``instructions_messages`` / ``input_messages`` tell its parts apart, since a later turn inherits
the input but not the instructions.
"""

from __future__ import annotations

from typing import Any

from passerelle.errors import InvalidRequestError

Item = dict[str, Any]
Message = dict[str, Any]
# fields passed to the chat body under the same name
SAME_NAME = (
    "model",
    "temperature",
    "top_p",
    "user",
    "parallel_tool_calls",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
)
# fields a chat upstream cannot honour: a 400, not an answer without them
UNSUPPORTED = {
    "background": "background responses are not supported by this gateway",
    "conversation": "server-side conversations are not supported; use previous_response_id",
    "prompt": "stored prompt templates are not supported by this gateway",
    "top_logprobs": "top_logprobs is not supported on /v1/responses by this gateway",
}
ROLES = frozenset({"user", "assistant", "system", "developer"})


def bad(message: str, param: str | None, code: str = "invalid_value") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


# -- request: Responses body -> chat body --------------------------------------------------------


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body for one Responses request (this turn only)."""
    for name, why in UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise bad(why, name, "unsupported_parameter")
    chat: dict[str, Any] = {k: body[k] for k in SAME_NAME if k in body}
    chat["messages"] = instructions_messages(body) + input_messages(body)
    _output_limit(body, chat)
    if "stream" in body:
        chat["stream"] = body["stream"]
        if body["stream"] is True:
            chat["stream_options"] = {"include_usage": True}  # response.completed carries usage
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise bad("metadata must be an object", "metadata", "invalid_type")
        if "feature" in metadata:  # the gateway's own tag; the rest is echoed, not sent upstream
            chat["metadata"] = {"feature": metadata["feature"]}
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    tools = chat_tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = chat_tool_choice(body["tool_choice"])
    fmt = response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    return chat


def _output_limit(body: dict[str, Any], chat: dict[str, Any]) -> None:
    limit = body.get("max_output_tokens")
    if limit is None:
        return
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise bad("max_output_tokens must be an integer of at least 1", "max_output_tokens")
    chat["max_completion_tokens"] = limit


def instructions_messages(body: dict[str, Any]) -> list[Message]:
    """``instructions`` as the system message (a later turn does not inherit them)."""
    instructions = body.get("instructions")
    if instructions is None:
        return []
    if not isinstance(instructions, str):
        raise bad("instructions must be a string", "instructions", "invalid_type")
    return [{"role": "system", "content": instructions}]


def input_messages(body: dict[str, Any]) -> list[Message]:
    """``input`` (a string or a list of items) as chat messages."""
    inp = body.get("input")
    if inp is None:
        raise bad("input is required", "input", "missing_required_parameter")
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    if not isinstance(inp, list):
        raise bad("input must be a string or an array of items", "input", "invalid_type")
    messages: list[Message] = []
    for i, item in enumerate(inp):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad(f"{param} must be an object", param, "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            _add_function_call(messages, item, param)
        elif kind == "function_call_output":
            messages.append(_function_output(item, param))
        else:
            raise bad(
                f"{param}.type '{kind}' is not supported by this gateway (supported: message, "
                "function_call, function_call_output)",
                f"{param}.type",
                "unsupported_value",
            )
    return messages


def _message(item: Item, param: str) -> Message:
    role = item.get("role")
    if role not in ROLES:
        raise bad(f"{param}.role must be one of {', '.join(sorted(ROLES))}", f"{param}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise bad(
            f"{param}.content must be a string or an array", f"{param}.content", "invalid_type"
        )
    parts = [_part(part, f"{param}.content[{j}]") for j, part in enumerate(content)]
    if role != "user" and all(p["type"] == "text" for p in parts):
        # chat servers accept text parts from every role, but not all of them: a string is safest
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise bad(f"{param} must be an object", param, "invalid_type")
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise bad(f"{param}.text must be a string", f"{param}.text", "invalid_type")
        return {"type": "text", "text": text}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise bad(
                f"{param}.image_url is required (file_id images are not supported)",
                f"{param}.image_url",
                "missing_required_parameter",
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise bad(
        f"{param}.type '{kind}' is not supported (supported: input_text, input_image, "
        "output_text, refusal)",
        f"{param}.type",
        "unsupported_value",
    )


def _add_function_call(messages: list[Message], item: Item, param: str) -> None:
    """A ``function_call`` item joins the assistant message before it, as chat has it."""
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    for field, value in (("call_id", call_id), ("name", name), ("arguments", arguments)):
        if not isinstance(value, str):
            raise bad(f"{param}.{field} must be a string", f"{param}.{field}", "invalid_type")
    tool_call = {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(tool_call)
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})


def _function_output(item: Item, param: str) -> Message:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise bad(f"{param}.call_id must be a string", f"{param}.call_id", "invalid_type")
    if isinstance(output, list):  # input_text parts (images in tool output are not carried)
        output = "".join(
            p.get("text", "")
            for p in output
            if isinstance(p, dict) and p.get("type") == "input_text"
        )
    if not isinstance(output, str):
        raise bad(f"{param}.output must be a string", f"{param}.output", "invalid_type")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad("tools must be an array", "tools", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise bad(
                f"tools[{i}].type '{kind}' is not supported: this gateway serves function tools only",
                f"tools[{i}].type",
                "unsupported_value",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad(
                f"tools[{i}].name is required", f"tools[{i}].name", "missing_required_parameter"
            )
        function: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
        raise bad("tool_choice.name is required", "tool_choice.name", "missing_required_parameter")
    raise bad(
        "tool_choice must be auto, none, required or a function", "tool_choice", "unsupported_value"
    )


def response_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` as chat's ``response_format``; plain text needs none."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise bad("text must be an object", "text", "invalid_type")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise bad(
                "text.format.name is required", "text.format.name", "missing_required_parameter"
            )
        if not isinstance(schema, dict):
            raise bad("text.format.schema must be an object", "text.format.schema", "invalid_type")
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise bad(
        "text.format.type must be text, json_object or json_schema",
        "text.format.type",
        "unsupported_value",
    )
