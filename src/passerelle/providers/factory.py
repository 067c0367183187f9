"""Building providers from configuration: every kind is a few lines of config, not code."""

from __future__ import annotations

from passerelle.config.load import Secrets
from passerelle.config.schema import ProviderConfig
from passerelle.providers.base import Provider
from passerelle.providers.transport import HttpTransport


def build_provider(config: ProviderConfig, secrets: Secrets) -> Provider:
    api_key = secrets.get(config.api_key)
    if config.kind == "local":
        from passerelle.providers.local import LocalProvider

        return LocalProvider(config)
    transport = HttpTransport(
        timeout_s=config.timeout_s,
        connect_timeout_s=config.connect_timeout_s,
        max_connections=config.max_connections,
        max_response_bytes=config.max_response_bytes,
    )
    if config.kind == "anthropic":
        from passerelle.providers.anthropic import AnthropicProvider

        return AnthropicProvider(config, api_key, transport)
    from passerelle.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(config, api_key, transport)
