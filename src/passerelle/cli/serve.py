"""``passerelle serve``: start the gateway."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

import click

from passerelle.cli.common import config_option, load
from passerelle.config.defaults import DATA_DIR
from passerelle.config.load import Loaded
from passerelle.gateway import Gateway
from passerelle.server.app import serve as serve_app
from passerelle.tenancy import ApiKey, key_digest, key_id_for, new_key


async def _first_key(gateway: Gateway) -> str | None:
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


@click.command()
@config_option
@click.option("--host", default=None, help="Listen address (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default from config: 8080).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes sharing the port. More than one needs `redis:` in the config "
    "when budgets, rate limits or margin floors are set.",
)
@click.option("--reuse-port", is_flag=True, hidden=True)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    workers: int,
    reuse_port: bool,
    log_level: str,
) -> None:
    """Start the gateway (the embedded default when no --config is given)."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    loaded = load(config_path)
    host = host or loaded.config.server.host
    port = loaded.config.server.port if port is None else port
    if workers > 1:
        from passerelle.cli.workers import supervise

        supervise(loaded, config_path, host, port, workers, log_level)
        return
    embedded = config_path is None and not reuse_port

    async def main() -> None:
        gateway = Gateway.from_config(loaded)
        key = await _first_key(gateway) if embedded else None

        def ready(h: str, p: int) -> None:
            banner(loaded, list(gateway.routes), f"http://{h}:{p}/v1", key, 1)

        await serve_app(gateway, host, port, on_ready=ready, reuse_port=reuse_port)

    run_loop(main())
