"""Providers are built from their own settings values; the configuration stops at one edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from passerelle.config.load import Secrets
from passerelle.config.schema import ProviderConfig
from passerelle.provider_settings import provider_settings
from passerelle.providers.anthropic import AnthropicProvider
from passerelle.providers.factory import build_provider
from passerelle.providers.local import LocalProvider
from passerelle.providers.openai_compat import OpenAICompatProvider
from passerelle.providers.settings import HttpSettings, LocalSettings, RemoteSettings

SECRETS = Secrets(values={"env:UPSTREAM_KEY": "sk-upstream"})


def test_a_remote_provider_gets_its_secret_resolved_and_its_http_limits() -> None:
    config = ProviderConfig(
        name="openai",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="env:UPSTREAM_KEY",
        timeout_s=12.5,
        connect_timeout_s=1.5,
        max_connections=7,
    )
    settings = provider_settings(config, SECRETS)
    assert settings == RemoteSettings(
        name="openai",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-upstream",
        http=HttpSettings(timeout_s=12.5, connect_timeout_s=1.5, max_connections=7),
    )


def test_a_local_provider_gets_only_the_engine_settings() -> None:
    config = ProviderConfig(
        name="on-prem", kind="local", model="gemma-3-270m", n_ctx=4096, max_queue=3, n_threads=2
    )
    assert provider_settings(config, SECRETS) == LocalSettings(
        name="on-prem", model="gemma-3-270m", n_ctx=4096, max_queue=3, n_threads=2
    )


@pytest.mark.asyncio(loop_scope="function")
async def test_each_kind_is_built_from_settings_alone(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")  # never loaded: building a provider does not start its engine
    openai = build_provider(
        RemoteSettings(name="o", kind="openai", base_url="http://127.0.0.1:9/v1", api_key="k")
    )
    claude = build_provider(RemoteSettings(name="c", kind="anthropic"))
    local = build_provider(LocalSettings(name="l", model=str(gguf)))
    try:
        assert isinstance(openai, OpenAICompatProvider) and openai.name == "o"
        assert isinstance(claude, AnthropicProvider) and claude.name == "c"
        assert isinstance(local, LocalProvider) and local.name == "l"
    finally:
        for p in (openai, claude, local):
            await p.aclose()


def test_an_openai_compatible_provider_needs_a_base_url() -> None:
    with pytest.raises(ValueError, match="base_url"):
        build_provider(RemoteSettings(name="o", kind="openai"))


def test_configured_capabilities_replace_what_the_kind_declares() -> None:
    config = ProviderConfig(
        name="vllm",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        capabilities={"n": False, "logprobs": False},  # type: ignore[arg-type]
    )
    provider = build_provider(provider_settings(config, SECRETS))
    caps = provider.capabilities
    assert (caps.n, caps.logprobs, caps.tools, caps.json_schema) == (False, False, True, True)


@pytest.mark.parametrize("kind", ["anthropic", "local"])
def test_only_an_openai_compatible_provider_may_claim_more_than_its_kind(kind: str) -> None:
    fields = {"model": "gemma-3-270m"} if kind == "local" else {}
    with pytest.raises(ValueError, match=r"can only turn capabilities off .*logprobs"):
        ProviderConfig(name="p", kind=kind, capabilities={"logprobs": True}, **fields)  # type: ignore[arg-type]
    off = ProviderConfig(name="p", kind=kind, capabilities={"vision": False}, **fields)  # type: ignore[arg-type]
    assert off.capabilities.overrides() == (("vision", False),)
