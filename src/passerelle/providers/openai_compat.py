"""Any OpenAI-compatible HTTP API (OpenAI, Mistral, vLLM, Ollama, llama.cpp server...).

Configuration alone makes a new upstream: a base URL and a key reference. Answers pass through as
the upstream's bytes; only what accounting needs (the usage object) is parsed out. Streams always
ask the upstream for the usage chunk and hide it from clients that did not ask for it. Legacy
completions (``/completions``, a ``prompt`` in, ``text`` out) pass through the same way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from passerelle.errors import ProviderFailedError
from passerelle.providers.base import (
    Capabilities,
    Completion,
    Embeddings,
    Provider,
    StreamChunk,
    UpstreamRequest,
    Usage,
)
from passerelle.providers.settings import RemoteSettings
from passerelle.providers.transport import HttpTransport, json_object, stream_broke, too_large
from passerelle.providers.upstream_errors import openai_error


def usage_from_openai(obj: Any) -> Usage | None:
    """Normalise an OpenAI ``usage`` object, cached tokens included."""
    if not isinstance(obj, dict):
        return None
    details = obj.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=int(obj.get("prompt_tokens") or 0),
        output_tokens=int(obj.get("completion_tokens") or 0),
        cached_tokens=int(cached or 0),
    )


def sse_payloads(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The ``data:`` payloads of the complete events in ``buffer``, and the incomplete rest."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    *events, rest = buffer.split(b"\n\n")
    payloads = []
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                payloads.append(line[5:].strip())
    return payloads, rest


OUTPUT_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")
PATHS = {"chat.completions": "/chat/completions", "completions": "/completions"}


def limit_output(body: dict[str, Any], limit: int | None) -> None:
    """Hold the answer to ``limit`` tokens per choice, in the field the client used (both if it
    sent both), else in ``max_tokens``, which every OpenAI-compatible server reads."""
    if limit is None:
        return
    used = [f for f in OUTPUT_LIMIT_FIELDS if f in body] or ["max_tokens"]
    for name in used:
        own = body.get(name)
        valid = isinstance(own, int) and not isinstance(own, bool) and own > 0
        body[name] = min(own, limit) if valid and isinstance(own, int) else limit


def to_upstream_body(request: UpstreamRequest) -> bytes:
    body = dict(request.body)
    body["model"] = request.upstream_model
    limit_output(body, request.max_output_tokens)
    if request.stream:
        opts = dict(body.get("stream_options") or {})
        opts["include_usage"] = True
        body["stream_options"] = opts
    return orjson.dumps(body)


class OpenAICompatProvider(Provider):
    kind = "openai"

    def __init__(self, settings: RemoteSettings, transport: HttpTransport):
        if not settings.base_url:
            raise ValueError(f"provider {settings.name!r}: an OpenAI-compatible API needs base_url")
        self.name = settings.name
        self.capabilities = Capabilities(
            streaming=True,
            tools=True,
            json_schema=True,
            vision=True,
            embeddings=True,
            completions=True,
            n=True,
            logprobs=True,
        )
        self._url = settings.base_url.rstrip("/")
        self._transport = transport
        self._headers = {"Content-Type": "application/json"}
        if settings.api_key:
            self._headers["Authorization"] = f"Bearer {settings.api_key}"

    async def complete(self, request: UpstreamRequest) -> Completion:
        raw = await self._post(PATHS[request.endpoint], to_upstream_body(request))
        doc = json_object(raw, self.name)
        usage = usage_from_openai(doc.get("usage"))
        if usage is None:
            usage = Usage(reported=False)
        model = doc.get("model") or request.upstream_model
        return Completion(body=raw, usage=usage, upstream_model=str(model))

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        body = dict(request.body)
        body["model"] = request.upstream_model
        raw = await self._post("/embeddings", orjson.dumps(body))
        doc = json_object(raw, self.name)
        u = doc.get("usage")
        tokens = u.get("prompt_tokens") if isinstance(u, dict) else None
        usage = Usage(input_tokens=int(tokens or 0), output_tokens=0)
        return Embeddings(body=raw, usage=usage, upstream_model=request.upstream_model)

    async def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        async with self._transport.stream(
            self.name, self._url + PATHS[request.endpoint], to_upstream_body(request), self._headers
        ) as resp:
            if resp.status >= 400:
                raise openai_error(
                    self.name, resp.status, await resp.read(), resp.headers.get("Retry-After")
                )
            done = False
            pending = b""
            try:
                # whatever one read brings is parsed at once and marked `more` but for its last
                # event, so the server writes it to the client in one system call
                async for data in resp.content.iter_any():
                    payloads, pending = sse_payloads(pending + data)
                    if len(pending) > self._transport.max_response_bytes:
                        raise too_large(self.name, self._transport.max_response_bytes)
                    for i, payload in enumerate(payloads):
                        if payload == b"[DONE]":
                            done = True
                            break
                        chunk = self._chunk(payload, request.include_usage)
                        chunk.more = i < len(payloads) - 1
                        yield chunk
                    if done:
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise stream_broke(self.name, exc) from exc
            if not done:
                raise ProviderFailedError("stream ended before [DONE]", provider=self.name)

    def _chunk(self, payload: bytes, include_usage: bool) -> StreamChunk:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return StreamChunk(data=payload)
        if not isinstance(obj, dict):
            return StreamChunk(data=payload)
        choices = obj.get("choices") or []
        chars = 0
        for c in choices:
            if not isinstance(c, dict):
                continue
            # a chat chunk's delta, or a legacy completion chunk's text
            content = (c.get("delta") or {}).get("content") if "delta" in c else c.get("text")
            if isinstance(content, str):
                chars += len(content)
        usage = usage_from_openai(obj.get("usage"))
        # usage-only events the client did not ask for are metered, not forwarded; a
        # `"usage": null` on ordinary chunks passes through untouched (clients ignore it)
        forward = include_usage or usage is None or bool(choices)
        return StreamChunk(data=payload, usage=usage, content_chars=chars, forward=forward)

    async def _post(self, path: str, body: bytes) -> bytes:
        status, raw, retry_after = await self._transport.post(
            self.name, self._url + path, body, self._headers
        )
        if status >= 400:
            raise openai_error(self.name, status, raw, retry_after)
        return raw

    async def aclose(self) -> None:
        await self._transport.aclose()
