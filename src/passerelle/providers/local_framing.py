"""How a chat becomes a prompt for a base model, and the sampling a request asks for.

Pure functions, no engine: ``transcript`` (the ``Question:``/``Answer:`` framing after two worked
examples; why this one is in ``providers/local.py``), stop sequences, sampling parameters, and the
OpenAI wire bodies the local engine answers with.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from passerelle.providers.base import Usage

# a greeting answered as one, and a question answered briefly: the form, not a topic to copy
EXAMPLES = (
    ("Good evening!", "Good evening! What can I do for you?"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong."),
)
TURN_STOPS = ("\nQuestion:", "\nAnswer:", "\n\n")
# Gemma's image placeholders are plain text to llama.cpp: a base model that writes one has ended
# its answer and starts another document (often a new ``Question:`` on the same line)
IMAGE_MARKERS = ("<start_of_image>", "<end_of_image>")
TRANSCRIPT_STOPS = (*TURN_STOPS, *IMAGE_MARKERS)
DEFAULT_TEMPERATURE = 0.7


@dataclass(frozen=True, slots=True)
class Framing:
    """A chat written as the text a base model continues, and where its answer ends."""

    prompt: str
    stop: tuple[str, ...]


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text") or "")
            for p in content
            if isinstance(p, dict) and p.get("type", "text") == "text"
        )
    return ""


def _one_line(text: str) -> str:
    # a blank line inside a turn would read as the end of the exchange
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


def transcript(messages: Sequence[dict[str, Any]]) -> Framing:
    """Frame a chat as a Question/Answer transcript that a base model answers in one turn.

    System (and developer) messages open the prompt; then the worked examples; then the turns,
    user messages as questions and assistant messages as answers, ending on ``Answer:``.
    """
    system = " ".join(
        _one_line(message_text(m.get("content")))
        for m in messages
        if m.get("role") in ("system", "developer")
    ).strip()
    blocks = [system] if system else []
    blocks.append("\n".join(f"Question: {q}\nAnswer: {a}" for q, a in EXAMPLES))
    turns = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            continue
        speaker = "Answer" if role == "assistant" else "Question"
        turns.append(f"{speaker}: {_one_line(message_text(m.get('content')))}")
    turns.append("Answer:")
    blocks.append("\n".join(turns))
    return Framing(prompt="\n\n".join(blocks), stop=TRANSCRIPT_STOPS)


def requested_stops(stop: Any) -> list[str]:
    """The client's ``stop``: absent, one string or a list; empty strings dropped."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    return [s for s in stops if isinstance(s, str) and s]


def merge_stops(requested: Any, framing: Sequence[str]) -> list[str]:
    """The client's stop sequences first, then the framing's, each once."""
    return list(dict.fromkeys([*requested_stops(requested), *framing]))


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def sampling(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """llama.cpp sampling parameters from an OpenAI request body (stop sequences apart)."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    seed = body.get("seed")
    return {
        "max_tokens": max_tokens
        if isinstance(max_tokens, int) and max_tokens > 0
        else default_max_tokens,
        "temperature": _number(body.get("temperature"), DEFAULT_TEMPERATURE),
        "top_p": _number(body.get("top_p"), 0.95),
        "frequency_penalty": _number(body.get("frequency_penalty"), 0.0),
        "presence_penalty": _number(body.get("presence_penalty"), 0.0),
        # -1: llama.cpp draws a seed for this request
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else -1,
    }


# --- OpenAI wire format -----------------------------------------------------------------------


def usage_json(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def completion_body(model: str, text: str, finish: str, usage: Usage, rid: str) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage_json(usage),
        }
    )


def chunk_body(model: str, rid: str, delta: dict[str, Any], finish: str | None) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def usage_chunk_body(model: str, rid: str, usage: Usage) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage_json(usage),
        }
    )


# --- the engine -------------------------------------------------------------------------------
