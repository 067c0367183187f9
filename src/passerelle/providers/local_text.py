"""Legacy text completions (``POST /v1/completions``) on the embedded engine.

A legacy completion continues its prompt as written: no transcript framing, no turn markers, no
stripping of the answer's leading space (" Paris" is the continuation of "The capital of France
is"), and no first-token rule (a continuation may well begin with a newline). The engine is
llama.cpp's own ``create_completion``. A batch (a list of prompts, strings or token arrays) is
answered one prompt after the other, one choice per prompt, in order; ``echo`` puts a text
prompt in front of its answer, ``suffix`` is handed to llama.cpp. What comes back is OpenAI's
``text_completion`` object, or its chunks, with the usage of the whole batch.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Protocol

import orjson

from passerelle.providers.base import Completion, StreamChunk, UpstreamRequest, Usage
from passerelle.providers.local_framing import requested_stops, usage_json

Prompt = str | list[int]
Piece = tuple[str, str | None]


class Counted(Protocol):
    """The engine's token count of one generation (``local_sampling.Tally``)."""

    def usage(self) -> Usage: ...


# the provider's generation of one prompt: (request, its tally, the prompt) -> its pieces
Generate = Callable[[UpstreamRequest, Any, Prompt], AsyncGenerator[Piece, None]]
NewTally = Callable[[], Counted]


def prompts_of(body: dict[str, Any]) -> list[Prompt]:
    """The prompts of a request: one string, one token array, or a batch of either."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
        return [prompt]
    if isinstance(prompt, list):
        return [p for p in prompt if isinstance(p, str | list)]
    return [""]


def engine_pieces(
    llm: Any, prompt: Prompt, body: dict[str, Any], tally: Any, params: dict[str, Any]
) -> Generator[Piece, None, None]:
    """On the engine thread: llama.cpp continues the prompt as given."""
    tokens = (
        prompt
        if isinstance(prompt, list)
        else llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
    )
    suffix = body.get("suffix")
    for part in llm.create_completion(
        prompt=tokens,
        suffix=suffix if isinstance(suffix, str) else None,
        stream=True,
        stop=requested_stops(body.get("stop")),
        logits_processor=[tally],
        **params,
    ):
        choice = part["choices"][0]
        yield choice.get("text") or "", choice.get("finish_reason")


def echoed(body: dict[str, Any], prompt: Prompt) -> str:
    """What ``echo`` puts before the answer: a text prompt (a token prompt is not decoded)."""
    return prompt if body.get("echo") is True and isinstance(prompt, str) else ""


def text_body(model: str, rid: str, texts: list[tuple[str, str]], usage: Usage) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
                for i, (text, finish) in enumerate(texts)
            ],
            "usage": usage_json(usage),
        }
    )


def text_chunk(model: str, rid: str, index: int, text: str, finish: str | None) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}],
        }
    )


def text_usage_chunk(model: str, rid: str, usage: Usage) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage_json(usage),
        }
    )


def _add(total: Usage, tally: Counted) -> None:
    one = tally.usage()
    total.input_tokens += one.input_tokens
    total.output_tokens += one.output_tokens


async def complete_text(
    generate: Generate, new_tally: NewTally, request: UpstreamRequest
) -> Completion:
    texts: list[tuple[str, str]] = []
    usage = Usage()
    for prompt in prompts_of(request.body):
        tally, parts, finish = new_tally(), [echoed(request.body, prompt)], "stop"
        async with contextlib.aclosing(generate(request, tally, prompt)) as pieces:
            async for text, reason in pieces:
                parts.append(text)
                finish = reason or finish
        texts.append(("".join(parts), finish))
        _add(usage, tally)
    model = request.upstream_model
    body = text_body(model, "cmpl-" + uuid.uuid4().hex, texts, usage)
    return Completion(body=body, usage=usage, upstream_model=model)


async def stream_text(
    generate: Generate, new_tally: NewTally, request: UpstreamRequest
) -> AsyncGenerator[StreamChunk, None]:
    rid, model, usage = "cmpl-" + uuid.uuid4().hex, request.upstream_model, Usage()
    for index, prompt in enumerate(prompts_of(request.body)):
        tally, finish = new_tally(), "stop"
        if echo := echoed(request.body, prompt):
            yield StreamChunk(data=text_chunk(model, rid, index, echo, None))
        async with contextlib.aclosing(generate(request, tally, prompt)) as pieces:
            async for text, reason in pieces:
                finish = reason or finish
                if text:
                    data = text_chunk(model, rid, index, text, None)
                    yield StreamChunk(data=data, content_chars=len(text))
        yield StreamChunk(data=text_chunk(model, rid, index, "", finish))
        _add(usage, tally)
    data = text_usage_chunk(model, rid, usage)
    yield StreamChunk(data=data, usage=usage, forward=request.include_usage)
