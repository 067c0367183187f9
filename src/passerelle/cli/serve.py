"""``passerelle serve``: start the gateway."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from passerelle.cli.common import config_option, load
from passerelle.config.defaults import DATA_DIR
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
    key = ApiKey(key_id=key_id_for(digest), tenant=gateway.config.tenants[0].name, digest=digest,
                 name="first")
    await gateway.ledger.create_key(key)
    gateway.keys.add(key)
    return secret


@click.command()
@config_option
@click.option("--host", default=None, help="Listen address (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default from config: 8080).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(config_path: str | None, host: str | None, port: int | None, log_level: str) -> None:
    """Start the gateway (the embedded default when no --config is given)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)
    loaded = load(config_path)
    host = host or loaded.config.server.host
    port = loaded.config.server.port if port is None else port
    embedded = config_path is None
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        gateway = Gateway.from_config(loaded)
        key = await _first_key(gateway) if embedded else None

        def ready(h: str, p: int) -> None:
            url = f"http://{h}:{p}/v1"
            click.echo(f"Passerelle is serving the OpenAI API at {url}")
            click.echo(f"  models: {', '.join(gateway.routes) or '(none configured)'}")
            click.echo(f"  ledger: {loaded.config.store}")
            if key:
                click.echo(f"  your API key (shown once; stored hashed): {key}")
            elif embedded:
                click.echo("  create an API key: passerelle keys create --tenant default")
            if embedded:
                click.echo(f"  admin token: {DATA_DIR}/admin-token")
            click.echo(f"READY {url}", nl=True)
            sys.stdout.flush()

        await serve_app(gateway, host, port, on_ready=ready)

    asyncio.run(main())
