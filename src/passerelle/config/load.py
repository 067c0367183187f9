"""Loading the configuration: YAML file, environment overrides, secret references.

Load once at start-up and pass the result explicitly. Secrets are resolved here and only here: a
reference that cannot be resolved stops start-up with a message that names the field
(``providers[0].api_key: environment variable ACME_CLOUD_KEY is not set``) and never the value.
Environment variables override deployment values only (listen address, store, redis).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from passerelle.config.schema import Config, KeyConfig
from passerelle.errors import ConfigError

ENV_OVERRIDES = {
    "PASSERELLE_STORE": ("store",),
    "PASSERELLE_REDIS": ("redis",),
    "PASSERELLE_HOST": ("server", "host"),
    "PASSERELLE_PORT": ("server", "port"),
}


@dataclass(frozen=True)
class Secrets:
    """Resolved secret values, by reference string."""

    values: Mapping[str, str]

    def get(self, ref: str | None) -> str | None:
        return None if ref is None else self.values[ref]


@dataclass(frozen=True)
class Loaded:
    config: Config
    secrets: Secrets
    source: str


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Loaded:
    env = os.environ if env is None else env
    if path is None:
        return load_config_text("{}", env=env, source="<embedded default>")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read configuration file ({exc.strerror})") from exc
    return load_config_text(text, env=env, source=str(p), base_dir=p.parent)


def load_config_text(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    source: str = "<string>",
    base_dir: Path | None = None,
) -> Loaded:
    env = os.environ if env is None else env
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    _apply_env_overrides(raw, env)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + _describe(exc)) from None
    secrets = {}
    for field, ref in _secret_fields(config):
        secrets[ref] = _resolve(field, ref, env, base_dir)
    return Loaded(config=config, secrets=Secrets(secrets), source=source)


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, keys in ENV_OVERRIDES.items():
        if name in env and env[name] != "":
            node = raw
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = env[name]


def _describe(exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "string_pattern_mismatch" and any(
            k in loc for k in ("api_key", "keys", "admin_token")
        ):
            msg = f"{msg} (secrets go by reference: env:NAME or file:PATH)"
        lines.append(f"{loc or '<top>'}: {msg}")
    return "; ".join(lines)


def _secret_fields(config: Config) -> Iterator[tuple[str, str]]:
    if config.admin_token:
        yield "admin_token", config.admin_token
    if config.audit is not None:
        yield "audit.key", config.audit.key
    for i, p in enumerate(config.providers):
        if p.api_key:
            yield f"providers[{i}].api_key", p.api_key
    for i, t in enumerate(config.tenants):
        for j, k in enumerate(t.keys):
            ref = k.key if isinstance(k, KeyConfig) else k
            yield f"tenants[{i}].keys[{j}]", ref


def _resolve(field: str, ref: str, env: Mapping[str, str], base_dir: Path | None) -> str:
    kind, _, name = ref.partition(":")
    if kind == "env":
        value = env.get(name)
        if not value:
            raise ConfigError(f"{field}: environment variable {name} is not set")
        return value
    path = Path(name)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read secret file {name} ({exc.strerror})") from None
    if not value:
        raise ConfigError(f"{field}: secret file {name} is empty")
    return value
