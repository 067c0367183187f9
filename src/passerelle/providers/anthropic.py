"""Anthropic's Messages API as a provider: bytes through the shared transport, failures as
``ProviderError``.

Anthropic is the one major upstream that is not OpenAI-compatible, so it cannot be configuration
alone; the translation itself lives in ``anthropic_wire.py`` as pure functions. A client that
speaks the Messages API itself (``POST /v1/messages``) is passed through as it spoke
(``anthropic_native.py``): no translation either way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import aiohttp
import orjson

from passerelle.errors import ProviderFailedError, ProviderRejectedError
from passerelle.providers import anthropic_structured
from passerelle.providers.anthropic_native import NativeStream, native_body
from passerelle.providers.anthropic_wire import (
    AnthropicStreamTranslator,
    from_anthropic_message,
    sse_data,
    to_anthropic_body,
    usage_from_anthropic,
)
from passerelle.providers.base import (
    Capabilities,
    Completion,
    Embeddings,
    Provider,
    StreamChunk,
    UpstreamRequest,
)
from passerelle.providers.settings import RemoteSettings
from passerelle.providers.transport import HttpTransport, json_object, stream_broke
from passerelle.providers.upstream_errors import anthropic_error

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


# -- the provider -------------------------------------------------------------------------------


def messages_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base + "/messages" if base.endswith("/v1") else base + "/v1/messages"


class AnthropicProvider(Provider):
    kind = "anthropic"

    def __init__(self, settings: RemoteSettings, transport: HttpTransport):
        self.name = settings.name
        self.capabilities = Capabilities(
            streaming=True,
            tools=True,
            json_schema=True,  # as a forced tool call: anthropic_structured.py
            vision=True,
            embeddings=False,
            native=frozenset({"messages"}),
        )
        self._url = messages_url(settings.base_url or DEFAULT_BASE_URL)
        self._transport = transport
        self._headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if settings.api_key:
            self._headers["x-api-key"] = settings.api_key

    async def complete(self, request: UpstreamRequest) -> Completion:
        native = request.api == "messages"
        body = native_body(request) if native else to_anthropic_body(request)
        structured = not native and anthropic_structured.apply(
            body, request.body.get("response_format")
        )
        body.pop("stream", None)
        status, raw, retry_after = await self._transport.post(
            self.name, self._url, orjson.dumps(body), self._headers_for(request)
        )
        if status >= 400:
            raise anthropic_error(self.name, status, raw, retry_after)
        doc = json_object(raw, self.name)
        model = str(doc.get("model") or request.upstream_model)
        usage = usage_from_anthropic(doc.get("usage"))
        if native:  # the client's own dialect: the answer as Anthropic gave it
            return Completion(body=raw, usage=usage, upstream_model=model)
        if structured:
            doc = anthropic_structured.unwrap(doc)
        answer = from_anthropic_message(doc, model)
        return Completion(body=orjson.dumps(answer), usage=usage, upstream_model=model)

    async def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        native = request.api == "messages"
        body = native_body(request) if native else to_anthropic_body(request)
        body["stream"] = True
        structured = (
            anthropic_structured.AnswerEvents()
            if not native and anthropic_structured.apply(body, request.body.get("response_format"))
            else None
        )
        translator: AnthropicStreamTranslator | NativeStream
        if native:
            translator = NativeStream(provider=self.name)
        else:
            translator = AnthropicStreamTranslator(
                provider=self.name,
                model=request.upstream_model,
                include_usage=request.include_usage,
            )
        async with self._transport.stream(
            self.name, self._url, orjson.dumps(body), self._headers_for(request)
        ) as resp:
            if resp.status >= 400:
                raise anthropic_error(
                    self.name, resp.status, await resp.read(), resp.headers.get("Retry-After")
                )
            try:
                async for line in resp.content:
                    data = sse_data(line)
                    if not data:
                        continue
                    if isinstance(translator, NativeStream):
                        yield translator.feed(data, line[5:].strip())
                    else:
                        event = str(data.get("type"))
                        if structured is not None:
                            event, data = structured.feed(event, data)
                        for chunk in translator.feed(event, data):
                            yield chunk
                    if translator.done:
                        break
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: bad JSON
                raise stream_broke(self.name, exc) from exc
        if not translator.done:
            raise ProviderFailedError("stream ended before message_stop", provider=self.name)

    async def embed(self, request: UpstreamRequest) -> Embeddings:
        raise ProviderRejectedError(
            "anthropic has no embeddings",
            provider=self.name,
            status=400,
            code="unsupported_endpoint",
        )

    def _headers_for(self, request: UpstreamRequest) -> dict[str, str]:
        """Its own headers, and in a passthrough the client's beta flags: a Claude Code session
        asks for features (prompt caching, tools, long context) by them."""
        extra = request.native_headers
        return {**self._headers, **extra} if extra else self._headers

    async def aclose(self) -> None:
        return None
