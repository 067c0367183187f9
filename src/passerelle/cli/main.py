"""Entry point of the ``passerelle`` command."""

from __future__ import annotations

import sys

import click

from passerelle.cli.audit import audit_group
from passerelle.cli.config import config_group
from passerelle.cli.drill import drill_cmd
from passerelle.cli.independence import independence_cmd
from passerelle.cli.keys import keys_group
from passerelle.cli.margins import margins_cmd, revenue_group
from passerelle.cli.router import router_group
from passerelle.cli.savings import savings
from passerelle.cli.serve import serve
from passerelle.cli.usage import usage
from passerelle.errors import ConfigError, StoreError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="passerelle")
def cli() -> None:
    """Passerelle: an OpenAI-compatible LLM gateway that meters every call."""


cli.add_command(serve)
cli.add_command(config_group)
cli.add_command(keys_group)
cli.add_command(usage)
cli.add_command(savings)
cli.add_command(margins_cmd)
cli.add_command(revenue_group)
cli.add_command(audit_group)
cli.add_command(router_group)
cli.add_command(independence_cmd)
cli.add_command(drill_cmd)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except (ConfigError, StoreError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
