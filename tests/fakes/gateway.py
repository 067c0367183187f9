"""``passerelle serve`` as a real subprocess, on a free port, with a configuration written for it.

Tests talk to it over loopback like any client would; nothing of the gateway is imported or mocked.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.fakes.process import ServerProcess

if TYPE_CHECKING:
    from openai import OpenAI

ADMIN_TOKEN = "adm-test-token"
TENANT_KEYS = {"acme": "sk-test-acme", "globex": "sk-test-globex"}
Sdk = Callable[..., "OpenAI"]  # the `sdk` fixture (tests/conftest.py): sdk(gateway, key) -> client


def openai_provider(name: str, url: str, **kw: Any) -> dict[str, Any]:
    """An `openai`-kind provider for tests: quick retries, a breaker that stays out of the way."""
    return {
        "name": name,
        "kind": "openai",
        "base_url": url,
        "api_key": "env:FAKE_UPSTREAM_KEY",
        "max_retries": 2,
        "retry_backoff_s": 0.01,
        "breaker_failures": 1000,
        "timeout_s": 10,
        **kw,
    }


def fake_upstream_config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    """A configuration with the fake upstream as provider `fake` and two tenants."""
    config: dict[str, Any] = {
        "admin_token": "env:PASSERELLE_ADMIN_TOKEN",
        "store": "sqlite:///./passerelle-data/ledger.db",
        "providers": [
            {
                "name": "fake",
                "kind": "openai",
                "base_url": upstream_url + "/v1",
                "api_key": "env:FAKE_UPSTREAM_KEY",
                "max_retries": 2,
                "retry_backoff_s": 0.01,
                "breaker_failures": 50,
                "timeout_s": 10,
            }
        ],
        "models": [
            {
                "name": "gpt-4o-mini",
                "targets": [
                    {
                        "provider": "fake",
                        "upstream_model": "gpt-4o-mini",
                        "price": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
                    }
                ],
            },
            {"name": "catalogued", "targets": [{"provider": "fake", "upstream_model": "gpt-4o"}]},
            {"name": "mystery", "targets": [{"provider": "fake", "upstream_model": "mystery-1"}]},
            {
                "name": "fake-embed",
                "targets": [{"provider": "fake", "upstream_model": "text-embedding-3-small"}],
            },
        ],
        "tenants": [
            {"name": name, "keys": [f"env:TENANT_KEY_{name.upper()}"]} for name in TENANT_KEYS
        ],
    }
    config.update(overrides)
    return config


class GatewayProcess(ServerProcess):
    name = "passerelle serve"

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any] | None,
        *,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        super().__init__(timeout=timeout)
        self.workdir = workdir
        self.config = config
        self.extra_env = env or {}
        self.args = args or []
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "passerelle.yaml"
        if config is not None:
            self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "passerelle", "serve", "--port", "0", *self.args]
        if self.config is not None:
            cmd += ["--config", str(self.config_path)]
        return cmd

    def cwd(self) -> str:
        return str(self.workdir)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PASSERELLE_ADMIN_TOKEN": ADMIN_TOKEN,
                "FAKE_UPSTREAM_KEY": "sk-upstream-secret",
                **{f"TENANT_KEY_{t.upper()}": k for t, k in TENANT_KEYS.items()},
                **self.extra_env,
            }
        )
        env.pop("PASSERELLE_CONFIG", None)
        return env

    def cli(self, *args: str) -> Any:
        """Run a `passerelle` command against this gateway's configuration."""
        import subprocess

        cmd = [sys.executable, "-m", "passerelle", *args]
        if self.config is not None:
            cmd += ["--config", str(self.config_path)]
        return subprocess.run(
            cmd,
            cwd=self.workdir,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ledger_rows(self, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of the ledger's ``usage`` table matching ``where``, as dicts, oldest first.

        Read from the SQLite file ``fake_upstream_config``'s ``store`` names, so it works while the
        gateway runs and after it is dead.
        """
        with closing(sqlite3.connect(self.workdir / "passerelle-data" / "ledger.db")) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                f"SELECT * FROM usage WHERE {where} ORDER BY ts, attempt", params
            ).fetchall()
        return [dict(r) for r in rows]
