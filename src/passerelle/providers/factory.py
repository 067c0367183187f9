"""Building a provider from its settings: every kind of upstream is settings, not code."""

from __future__ import annotations

from passerelle.providers.anthropic import AnthropicProvider
from passerelle.providers.base import Provider
from passerelle.providers.local import LocalProvider
from passerelle.providers.openai_compat import OpenAICompatProvider
from passerelle.providers.settings import ProviderSettings, RemoteSettings
from passerelle.providers.transport import HttpTransport


def build_provider(settings: ProviderSettings) -> Provider:
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
