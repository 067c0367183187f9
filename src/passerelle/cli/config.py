"""``passerelle config``: check a file, print the configuration reference."""

from __future__ import annotations

import click

from passerelle.config.load import load_config
from passerelle.config.reference import reference_markdown


@click.group("config")
def config_group() -> None:
    """Check configuration files and print the reference."""


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate PATH: schema, references between sections, and every secret it names."""
    loaded = load_config(path)
    c = loaded.config
    click.echo(
        f"{path}: OK ({len(c.providers)} providers, {len(c.models)} models, "
        f"{len(c.tenants)} tenants, store {c.store.split(':', 1)[0]})"
    )


@config_group.command("reference")
def reference() -> None:
    """Print the configuration reference (Markdown), generated from the schema."""
    click.echo(reference_markdown(), nl=False)
