"""``passerelle serve``: start the gateway."""

from __future__ import annotations

import logging
import sys

import click

from passerelle.cli.loading import config_option, load
from passerelle.cli.startup import banner, first_key, run_loop
from passerelle.cli.workers import supervise
from passerelle.gateway import Gateway
from passerelle.server.app import serve as serve_app


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
        supervise(loaded, config_path, host, port, workers, log_level)
        return
    embedded = config_path is None and not reuse_port

    async def main() -> None:
        gateway = Gateway.from_config(loaded)
        key = await first_key(gateway) if embedded else None

        def ready(h: str, p: int) -> None:
            banner(loaded, list(gateway.routes), f"http://{h}:{p}/v1", key, 1)

        await serve_app(gateway, host, port, on_ready=ready, reuse_port=reuse_port)

    run_loop(main())
