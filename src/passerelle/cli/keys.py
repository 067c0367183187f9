"""``passerelle keys``: create and list tenant API keys."""

from __future__ import annotations

import click

from passerelle.cli.common import config_option, load, with_ledger
from passerelle.tenancy import ApiKey, key_digest, key_id_for, new_key


@click.group("keys")
def keys_group() -> None:
    """Create and list API keys (stored hashed; a key is shown once)."""


@keys_group.command("create")
@config_option
@click.option("--tenant", required=True, help="Tenant the key belongs to.")
@click.option("--name", default=None, help="A label for reports.")
def create(config_path: str | None, tenant: str, name: str | None) -> None:
    """Create a key for TENANT and print it once."""
    loaded = load(config_path)
    known = {t.name for t in loaded.config.tenants}
    if known and tenant not in known:
        raise click.UsageError(
            f"unknown tenant {tenant!r}; the configuration declares: {', '.join(sorted(known))}"
        )
    secret = new_key()
    digest = key_digest(secret)
    key = ApiKey(key_id=key_id_for(digest), tenant=tenant, digest=digest, name=name)

    with_ledger(loaded, lambda ledger: ledger.create_key(key))
    click.echo(secret)
    click.echo(f"key {key.key_id} for tenant {tenant}: shown once, stored hashed", err=True)


@keys_group.command("list")
@config_option
@click.option("--tenant", default=None)
def list_(config_path: str | None, tenant: str | None) -> None:
    """List the keys created with this command (never the keys themselves)."""
    loaded = load(config_path)

    for k in with_ledger(loaded, lambda ledger: ledger.list_keys(tenant)):
        click.echo(f"{k.key_id}  {k.tenant}  {k.name or ''}".rstrip())
