"""Finding and loading the configuration, opening the ledger: what several commands start with."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from passerelle.config.defaults import DATA_DIR, EMBEDDED
from passerelle.config.load import Loaded, load_config, load_config_text
from passerelle.store.base import Ledger
from passerelle.store.ledgers import open_ledger

T = TypeVar("T")

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="PASSERELLE_CONFIG",
    help="Configuration file (YAML). Without one, the embedded default is used.",
)


def with_ledger(loaded: Loaded, work: Callable[[Ledger], Awaitable[T]]) -> T:
    """Open the configured ledger, run ``work`` on it, close it (draining what it wrote)."""

    async def run() -> T:
        ledger = open_ledger(loaded.config.store)
        await ledger.start()
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    return asyncio.run(run())


def ensure_admin_token(data_dir: Path) -> Path:
    path = data_dir / "admin-token"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("adm-" + secrets.token_urlsafe(32) + "\n")
    return path


def load(config_path: str | None) -> Loaded:
    if config_path is not None:
        return load_config(config_path)
    ensure_admin_token(Path(DATA_DIR))
    return load_config_text(EMBEDDED, source="<embedded default>")
