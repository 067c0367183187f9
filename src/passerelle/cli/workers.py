"""``passerelle serve --workers N``: N gateway processes sharing one port (SO_REUSEPORT).

The parent checks that the configuration can be shared (budgets, rate limits and margin floors
need Redis, or each worker would count alone), starts the workers, waits until each one listens,
prints one banner, and forwards SIGINT/SIGTERM to them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import click

from passerelle.cli.startup import banner, first_key
from passerelle.config.load import Loaded
from passerelle.gateway import Gateway


def check_shareable(loaded: Loaded) -> None:
    c = loaded.config
    limited = any(t.budgets or t.rate_limits for t in c.tenants) or any(
        p.margin_floor for p in c.plans
    )
    if limited and not c.redis:
        raise click.UsageError(
            "--workers > 1 with budgets, rate limits or margin floors needs `redis:` in the "
            "configuration, so that every worker counts against the same totals"
        )
    if not c.redis:
        click.echo("note: without `redis:`, Idempotency-Key replays are per worker", err=True)


def supervise(
    loaded: Loaded, config_path: str | None, host: str, port: int, workers: int, log_level: str
) -> None:
    if port == 0:
        raise click.UsageError("--workers > 1 needs a fixed --port")
    check_shareable(loaded)
    key = None
    if config_path is None:

        async def first() -> str | None:
            gateway = Gateway.from_config(loaded)
            try:
                return await first_key(gateway)
            finally:
                await gateway.ledger.close()

        key = asyncio.run(first())
    cmd = [
        sys.executable,
        "-m",
        "passerelle",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--reuse-port",
        "--log-level",
        log_level,
    ]
    if config_path is not None:
        cmd += ["--config", config_path]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    for p in procs:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith("READY "):
                break
        else:
            for q in procs:
                q.terminate()
            raise click.ClickException("a worker failed to start; see its log above")

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    routes = [m.name for m in loaded.config.models]
    banner(loaded, routes, f"http://{host}:{port}/v1", key, workers)
    for p in procs:
        p.wait()
