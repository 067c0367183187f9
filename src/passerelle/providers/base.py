"""The Provider protocol: what the gateway needs from any upstream.

A provider has a name, its capabilities as data, and four methods: ``complete`` (one JSON answer),
``stream`` (Server-Sent Events, as OpenAI ``chat.completion.chunk`` payloads), ``embed`` and
``aclose``; ``load`` is optional, with a default on the protocol. Whatever the upstream speaks, it answers in OpenAI's wire format and reports usage as a
``Usage``; the translation lives inside each provider as pure functions. A provider that speaks
an inbound dialect itself (``Capabilities.native``: Anthropic's Messages API) may be handed the
client's own body instead (``UpstreamRequest.api`` names it) and then answers in that dialect,
its stream events carrying their SSE ``event`` names. Upstream failures leave a provider only as
``ProviderError``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Capabilities:
    streaming: bool = True
    tools: bool = False
    json_schema: bool = False
    vision: bool = False
    embeddings: bool = False
    completions: bool = False  # the legacy text completions endpoint (``prompt`` in, text out)
    n: bool = False  # several choices in one call; without it the gateway makes ``n`` calls
    logprobs: bool = False  # token log probabilities in the answer
    # keep reading a stream after the client left, to learn the real usage (remote APIs charge
    # for the whole answer); a local engine stops instead
    drain_on_disconnect: bool = True
    # the inbound dialects it speaks itself ("messages"): their calls are passed through natively
    native: frozenset[str] = frozenset()


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # read from the prompt cache; part of input_tokens
    cache_write_tokens: int = 0  # written to the prompt cache (Anthropic); part of input_tokens
    # False when the numbers were counted by the gateway (a stream cut short), not reported
    reported: bool = True


@dataclass(slots=True)
class UpstreamRequest:
    """What dispatch hands a provider: the client's body with the upstream model name set, and
    the endpoint it is for (``complete`` and ``stream`` serve chat and legacy completions alike;
    only a provider whose capabilities say ``completions`` is handed the latter)."""

    body: dict[str, Any]
    upstream_model: str
    stream: bool
    include_usage: bool = False  # the client asked for the usage chunk
    # the most output tokens per choice the upstream may produce: what admission reserved (or the
    # client's own limit); each provider sends it in its own field. None: the upstream's default
    max_output_tokens: int | None = None
    endpoint: str = "chat.completions"  # or "completions": a ``prompt``, answered as text
    # the wire format asked for: ``endpoint``'s (``body``), or a dialect the provider speaks
    # natively (``Capabilities.native``), whose body, model already set, is ``native_body``
    api: str = "chat.completions"
    native_body: dict[str, Any] | None = None
    # the client's headers a native dialect carries meaning in (Anthropic's ``anthropic-beta``)
    native_headers: dict[str, str] | None = None


@dataclass(slots=True)
class Completion:
    body: bytes  # the OpenAI JSON document to send to the client
    usage: Usage
    upstream_model: str


@dataclass(slots=True)
class StreamChunk:
    """One SSE event: ``data`` is the JSON payload, sent as ``data: <data>\\n\\n`` (after
    ``event: <event>\\n`` when it has an event name, as Anthropic's events do)."""

    data: bytes
    usage: Usage | None = None  # set on the event that carries the final usage
    content_chars: int = 0  # characters of generated text, to estimate usage if the stream dies
    forward: bool = True  # False for usage-only events the client did not ask for
    more: bool = False  # more events arrived with this one: the writer may hold it to batch
    event: bytes | None = None  # the SSE event name, if any


@dataclass(slots=True)
class Embeddings:
    body: bytes
    usage: Usage
    upstream_model: str


class Provider(Protocol):
    """What every upstream implements. Providers subclass it, and so inherit the defaults of the
    optional capabilities (``load``) instead of the gateway probing for them."""

    name: str
    kind: str
    capabilities: Capabilities

    async def complete(self, request: UpstreamRequest) -> Completion: ...

    def stream(self, request: UpstreamRequest) -> AsyncGenerator[StreamChunk, None]:
        """An async generator: closing it (``aclose``) frees the upstream connection."""
        ...

    async def embed(self, request: UpstreamRequest) -> Embeddings: ...

    async def aclose(self) -> None: ...

    async def load(self) -> None:
        """Get ready before the first request (the local engine loads its weights); by default
        there is nothing to do."""
        return None
