"""``passerelle savings``: what the cache (and any other source) saved, against what was paid."""

from __future__ import annotations

from decimal import Decimal

import click

from passerelle.cli.loading import config_option, load, with_ledger
from passerelle.errors import APIError
from passerelle.pricing.cost import usd_report
from passerelle.store.query import parse_group_by, parse_when
from passerelle.store.savings import NO_SOURCE, SavingsRow, combined


def _rate(row: SavingsRow) -> str:
    return "-" if row.hit_rate is None else f"{row.hit_rate:.1%}"


def render_table(group_by: list[str], rows: list[SavingsRow]) -> str:
    sources = sorted({s for r in rows for s in r.saved_by_source if s != NO_SOURCE})
    head = [*group_by, "requests", "lookups", "hits", "hit_rate", "paid_usd", "saved_usd"]
    head += [f"saved:{s}" for s in sources] + ["without_savings_usd"]

    def cells(r: SavingsRow, group: list[str]) -> list[str]:
        return [
            *group,
            str(r.requests),
            str(r.lookups),
            str(r.hits),
            _rate(r),
            usd_report(r.cost_usd),
            usd_report(r.saved_usd),
            *(usd_report(r.saved_by_source.get(s, Decimal(0))) for s in sources),
            usd_report(r.cost_without_savings_usd),
        ]

    body = [
        cells(r, [str(r.group[g]) if r.group[g] is not None else "-" for g in group_by])
        for r in rows
    ]
    total = cells(combined(rows), ["TOTAL", *([""] * (len(group_by) - 1))] if group_by else [])
    widths = [max(len(row[i]) for row in [head, *body, total]) for i in range(len(head))]
    numeric = set(range(len(group_by), len(head)))

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *(fmt(r) for r in body), rule, fmt(total)])


@click.command()
@config_option
@click.option(
    "--by",
    "by",
    default="tenant,feature",
    show_default=True,
    help="Comma-separated: tenant, feature, model, key, user, day, month (and the other "
    "columns of `passerelle usage`).",
)
@click.option("--since", default=None, help="ISO date/time or a span like 24h, 7d.")
@click.option("--until", default=None, help="ISO date/time or a span like 1h.")
def savings(config_path: str | None, by: str, since: str | None, until: str | None) -> None:
    """Requests, cache hits and hit rate, what was paid, what was saved (by source) and what the
    same requests would have cost without any saving, from the ledger."""
    try:
        group_by = parse_group_by(by)
        since_dt = parse_when(since, "since")
        until_dt = parse_when(until, "until")
    except APIError as exc:
        raise click.UsageError(exc.message) from None
    loaded = load(config_path)
    rows = with_ledger(loaded, lambda ledger: ledger.savings(group_by, since_dt, until_dt))
    if not rows:
        click.echo("no calls recorded" + (f" since {since}" if since else ""))
        return
    click.echo(render_table(group_by, rows))
