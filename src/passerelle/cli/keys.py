"""``passerelle keys``: create and list tenant API keys.

A key is created for a tenant that exists: declared in the configuration, or holding keys already.
``--create-tenant`` creates a new one, with no budget and no rate limit (said on stderr), and
only under a valid name, so a typo never becomes a tenant by accident.
"""

from __future__ import annotations

import click

from passerelle.cli.loading import config_option, load, with_ledger
from passerelle.tenancy import ApiKey, key_digest, key_id_for, new_key, tenant_name_problem


@click.group("keys")
def keys_group() -> None:
    """Create and list API keys (stored hashed; a key is shown once)."""


@keys_group.command("create")
@config_option
@click.option("--tenant", required=True, help="Tenant the key belongs to.")
@click.option("--name", default=None, help="A label for reports.")
@click.option(
    "--create-tenant",
    is_flag=True,
    default=False,
    help="Create TENANT if it is neither declared nor holding keys (it gets no budgets).",
)
def create(config_path: str | None, tenant: str, name: str | None, create_tenant: bool) -> None:
    """Create a key for TENANT and print it once."""
    loaded = load(config_path)
    known = {t.name for t in loaded.config.tenants}
    created = False
    if tenant not in known:
        problem = tenant_name_problem(tenant)
        if problem is not None:
            raise click.UsageError(f"invalid tenant {tenant!r}: {problem}")
        if not with_ledger(loaded, lambda ledger: ledger.list_keys(tenant)):
            if not create_tenant:
                raise click.UsageError(
                    f"unknown tenant {tenant!r}; the configuration declares: "
                    f"{', '.join(sorted(known)) or 'none'}. Check the spelling, or pass "
                    "--create-tenant to create it (it will have no budgets or rate limits)"
                )
            created = True
    if name is not None and (len(name) > 128 or not name.isprintable()):
        raise click.UsageError("--name is at most 128 printable characters")
    secret = new_key()
    digest = key_digest(secret)
    key = ApiKey(key_id=key_id_for(digest), tenant=tenant, digest=digest, name=name)

    with_ledger(loaded, lambda ledger: ledger.create_key(key))
    click.echo(secret)
    click.echo(f"key {key.key_id} for tenant {tenant}: shown once, stored hashed", err=True)
    if created:
        click.echo(
            f"tenant {tenant} created with no budgets and no rate limits; declare it in the "
            "configuration to give it some",
            err=True,
        )


@keys_group.command("list")
@config_option
@click.option("--tenant", default=None)
def list_(config_path: str | None, tenant: str | None) -> None:
    """List the keys created with this command (never the keys themselves)."""
    loaded = load(config_path)

    for k in with_ledger(loaded, lambda ledger: ledger.list_keys(tenant)):
        click.echo(f"{k.key_id}  {k.tenant}  {k.name or ''}".rstrip())
