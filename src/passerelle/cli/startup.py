"""What starting a gateway prepares and prints, for one process or a supervisor of workers.

``passerelle serve`` and the worker supervisor (``cli/workers.py``) both give a fresh embedded
start its first API key and print the same banner. Both import it from here: the command uses the
supervisor, and the supervisor never imports the command (the import contracts check it).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

import click

from passerelle.config.defaults import DATA_DIR
from passerelle.config.load import Loaded
from passerelle.gateway import Gateway
from passerelle.tenancy import ApiKey, key_digest, key_id_for, new_key


async def first_key(gateway: Gateway) -> str | None:
    """On a fresh embedded start, give the default tenant a key and say it once."""
    await gateway.ledger.start()
    if gateway.config.tenants[0].keys or await gateway.ledger.list_keys():
        return None
    secret = new_key()
    digest = key_digest(secret)
    key = ApiKey(
        key_id=key_id_for(digest),
        tenant=gateway.config.tenants[0].name,
        digest=digest,
        name="first",
    )
    await gateway.ledger.create_key(key)
    gateway.keys.add(key)
    return secret


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def banner(loaded: Loaded, routes: list[str], url: str, key: str | None, workers: int) -> None:
    embedded = loaded.source == "<embedded default>"
    click.echo(
        f"Passerelle is serving the OpenAI API at {url}"
        + (f" ({workers} workers)" if workers > 1 else "")
    )
    click.echo(f"  models: {', '.join(routes) or '(none configured)'}")
    click.echo(
        f"  ledger: {loaded.config.store}"
        + (f"; shared state: {loaded.config.redis}" if loaded.config.redis else "")
    )
    if key:
        click.echo(f"  your API key (shown once; stored hashed): {key}")
    elif embedded:
        click.echo("  create an API key: passerelle keys create --tenant default")
    if embedded:
        click.echo(f"  admin token: {DATA_DIR}/admin-token")
    click.echo(f"READY {url}")
    sys.stdout.flush()
