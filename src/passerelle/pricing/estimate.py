"""Counting tokens before the call, or after a stream died without reporting them.

Providers report usage after the call; budgets need a number before it. The estimate errs high
(UTF-8 bytes / 2 rarely undercounts real tokenisers, where characters / 4 does for code and
non-Latin text); settlement gives the difference back.
"""

from __future__ import annotations

from typing import Any

PER_MESSAGE_OVERHEAD = 4


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, list):
        return sum(_text_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_bytes(v) for k, v in value.items() if k != "type")
    return 0


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
    return _text_bytes(body.get("input")) // 2 + 1
