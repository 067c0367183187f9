"""Counting tokens before the call, or after a stream died without reporting them.

Providers report usage after the call; budgets need a number before it. The estimate errs high
(UTF-8 bytes / 2 rarely undercounts real tokenisers, where characters / 4 does for code and
non-Latin text); settlement gives the difference back. The walk over the body is iterative, so
no shape of input can make it exhaust the stack (parse refuses deep bodies anyway).
"""

from __future__ import annotations

from typing import Any

PER_MESSAGE_OVERHEAD = 4


def _text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string in ``value``, except the values of ``type`` keys."""
    total = 0
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            total += len(node.encode("utf-8"))
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(v for k, v in node.items() if k != "type")
    return total


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if isinstance(messages, list):
        total = sum(
            PER_MESSAGE_OVERHEAD + _text_bytes(m.get("content")) // 2
            for m in messages
            if isinstance(m, dict)
        )
        total += _text_bytes(body.get("tools")) // 2
        return total + 3
    if "prompt" in body:  # a legacy completion: its prompt, and the suffix it fills up to
        tokens = body.get("prompt")
        ids = _token_ids(tokens)
        return ids + (_text_bytes(tokens) + _text_bytes(body.get("suffix"))) // 2 + 1
    return _text_bytes(body.get("input")) // 2 + 1


def _token_ids(value: Any) -> int:
    """Token ids given as integers (a prompt or input of token arrays): one token each."""
    if not isinstance(value, list):
        return 0
    return sum(len(x) if isinstance(x, list) else 1 for x in value if isinstance(x, int | list))
