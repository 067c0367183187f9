"""Where a provider's configuration becomes the settings value it is built from.

This is the edge between ``config`` and ``providers``: the pydantic ``ProviderConfig`` stops here,
its secret reference is resolved, and each provider receives only the small frozen value of its
kind (``providers/settings.py``).
"""

from __future__ import annotations

from passerelle.config.load import Secrets
from passerelle.config.schema import ProviderConfig
from passerelle.providers.settings import (
    HttpSettings,
    LocalSettings,
    ProviderSettings,
    RemoteSettings,
)


def provider_settings(config: ProviderConfig, secrets: Secrets) -> ProviderSettings:
    if config.kind == "local":
        assert config.model is not None  # the schema requires it for kind local
        return LocalSettings(
            name=config.name,
            model=config.model,
            chat_format=config.chat_format,
            n_ctx=config.n_ctx,
            n_threads=config.n_threads,
            max_queue=config.max_queue,
            default_max_tokens=config.default_max_tokens,
            capabilities=config.capabilities.overrides(),
        )
    return RemoteSettings(
        name=config.name,
        kind=config.kind,
        base_url=config.base_url,
        api_key=secrets.get(config.api_key),
        http=HttpSettings(
            timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            max_connections=config.max_connections,
            max_response_bytes=config.max_response_bytes,
        ),
        capabilities=config.capabilities.overrides(),
    )
