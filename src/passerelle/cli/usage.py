"""``passerelle usage``: the ledger as a table, grouped as asked."""

from __future__ import annotations

from decimal import Decimal

import click

from passerelle.cli.loading import config_option, load, with_ledger
from passerelle.errors import APIError
from passerelle.pricing.cost import usd_report
from passerelle.store.query import parse_group_by, parse_when
from passerelle.store.records import UsageRow


def render_table(group_by: list[str], rows: list[UsageRow]) -> str:
    head = [*group_by, "requests", "input", "output", "cached", "cost_usd", "unpriced"]
    body = [
        [
            *(str(r.group[g]) if r.group[g] is not None else "-" for g in group_by),
            str(r.requests),
            str(r.input_tokens),
            str(r.output_tokens),
            str(r.cached_tokens),
            usd_report(r.cost_usd),
            str(r.unpriced_requests),
        ]
        for r in rows
    ]
    total_cost = usd_report(sum((r.cost_usd for r in rows), Decimal(0)))
    total = ["TOTAL", *([""] * (len(group_by) - 1))] if group_by else []
    body.append(
        [
            *total,
            str(sum(r.requests for r in rows)),
            str(sum(r.input_tokens for r in rows)),
            str(sum(r.output_tokens for r in rows)),
            str(sum(r.cached_tokens for r in rows)),
            str(total_cost),
            str(sum(r.unpriced_requests for r in rows)),
        ]
    )
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    numeric = set(range(len(group_by), len(head)))

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *(fmt(r) for r in body[:-1]), rule, fmt(body[-1])])


@click.command()
@config_option
@click.option(
    "--by",
    "by",
    default="tenant",
    show_default=True,
    help="Comma-separated: tenant, feature, model, provider, upstream_model, key, "
    "user, status, day.",
)
@click.option("--since", default=None, help="ISO date/time or a span like 24h, 7d.")
@click.option("--until", default=None, help="ISO date/time or a span like 1h.")
def usage(config_path: str | None, by: str, since: str | None, until: str | None) -> None:
    """Requests, tokens and cost from the ledger, grouped."""
    try:
        group_by = parse_group_by(by)
        since_dt = parse_when(since, "since")
        until_dt = parse_when(until, "until")
    except APIError as exc:
        raise click.UsageError(exc.message) from None
    loaded = load(config_path)

    rows = with_ledger(loaded, lambda ledger: ledger.usage(group_by, since_dt, until_dt))
    if not rows:
        click.echo("no usage recorded" + (f" since {since}" if since else ""))
        return
    click.echo(render_table(group_by, rows))
