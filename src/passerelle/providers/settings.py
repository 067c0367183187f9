"""The settings a provider is built from: small frozen values, one per kind of provider.

Providers never see the configuration's pydantic models (the import contracts forbid
``providers`` to import ``config``): the edge that reads the configuration
(``passerelle.provider_settings``) builds these values, secrets already resolved, so a provider
can be built in a test or a benchmark from a few keyword arguments, and a change to the
configuration's schema stops at that edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How to reach and hold connections to a remote HTTP upstream."""

    timeout_s: float = 60.0  # total time of one attempt
    connect_timeout_s: float = 5.0
    max_connections: int = 256
    max_response_bytes: int = 64 * 1024 * 1024  # the most one answer (or one event) may hold


@dataclass(frozen=True, slots=True)
class RemoteSettings:
    """An upstream reached over HTTP: an OpenAI-compatible API or Anthropic's Messages API."""

    name: str
    kind: Literal["openai", "anthropic"]
    base_url: str | None = None  # required for openai; anthropic has a default
    api_key: str | None = None  # the secret itself, resolved from its reference
    http: HttpSettings = HttpSettings()
    # (capability, on) pairs that replace what the kind declares (``Capabilities``)
    capabilities: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """The embedded llama.cpp engine."""

    name: str
    model: str  # a shipped model name or a GGUF path
    chat_format: Literal["transcript", "template"] = "transcript"
    n_ctx: int = 2048
    n_threads: int | None = None  # None: half the usable CPUs, at least one
    max_queue: int = 16
    default_max_tokens: int = 256
    capabilities: tuple[tuple[str, bool], ...] = ()  # as for ``RemoteSettings``


ProviderSettings = RemoteSettings | LocalSettings
