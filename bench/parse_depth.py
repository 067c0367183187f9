"""What refusing deep JSON costs on the hot path: ``load_json_object`` against ``orjson.loads``.

Parse walks the body for its nesting depth only when it holds more brackets than the limit
allows; this prints microseconds per call for a typical chat body (no walk), a body with 30
messages and 10 tools (a walk), and a hostile body 1,000 levels deep (refused after 64 levels).

    PYTHONPATH=src .venv/bin/python bench/parse_depth.py
"""

from __future__ import annotations

import contextlib
import timeit

import orjson

from passerelle.errors import InvalidRequestError
from passerelle.pipeline.parse import load_json_object

N = 20_000


def bodies() -> list[tuple[str, bytes]]:
    typical = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are helpful. " * 5},
            {"role": "user", "content": "hello " * 100},
        ],
        "max_tokens": 200,
    }
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {}}},
            },
        },
    }
    tools = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}] * 30,
        "tools": [tool] * 10,
    }
    hostile = b'{"model": "m", "tools": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    return [
        ("typical chat", orjson.dumps(typical)),
        ("30 messages + 10 tools", orjson.dumps(tools)),
        ("1,000 levels deep", hostile),
    ]


def load(raw: bytes) -> None:
    with contextlib.suppress(InvalidRequestError):
        load_json_object(raw)


def main() -> None:
    print(f"{'body':<24} {'bytes':>7} {'orjson.loads':>13} {'load_json_object':>17} {'added':>8}")
    for name, raw in bodies():
        base = timeit.timeit(lambda raw=raw: orjson.loads(raw), number=N) / N * 1e6
        full = timeit.timeit(lambda raw=raw: load(raw), number=N) / N * 1e6
        print(f"{name:<24} {len(raw):>7} {base:>10.2f} us {full:>14.2f} us {full - base:>5.2f} us")


if __name__ == "__main__":
    main()
