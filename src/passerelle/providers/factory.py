"""Building a provider from its settings: every kind of upstream is settings, not code.

A provider declares its capabilities in code; the settings may change them (an OpenAI-compatible
server without ``n`` or ``logprobs``), and the gateway then routes by what is declared here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from passerelle.providers.anthropic import AnthropicProvider
from passerelle.providers.base import Provider
from passerelle.providers.local import LocalProvider
from passerelle.providers.openai_compat import OpenAICompatProvider
from passerelle.providers.settings import ProviderSettings, RemoteSettings
from passerelle.providers.transport import HttpTransport


def build_provider(settings: ProviderSettings) -> Provider:
    provider = _provider(settings)
    if settings.capabilities:
        changes: dict[str, Any] = dict(settings.capabilities)
        provider.capabilities = dataclasses.replace(provider.capabilities, **changes)
    return provider


def _provider(settings: ProviderSettings) -> Provider:
    if not isinstance(settings, RemoteSettings):
        return LocalProvider(settings)
    transport = HttpTransport(
        timeout_s=settings.http.timeout_s,
        connect_timeout_s=settings.http.connect_timeout_s,
        max_connections=settings.http.max_connections,
        max_response_bytes=settings.http.max_response_bytes,
    )
    if settings.kind == "anthropic":
        return AnthropicProvider(settings, transport)
    return OpenAICompatProvider(settings, transport)
