"""``passerelle margins`` and ``passerelle revenue``: what tenants pay against what they cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import click

from passerelle.cli.loading import config_option, load, with_ledger
from passerelle.economics.margins import TenantMargin, margins
from passerelle.economics.revenue import RevenueBook, parse_revenue_csv
from passerelle.errors import APIError
from passerelle.months import FIRST_MONTH, LAST_MONTH, is_month, month_of
from passerelle.store.base import Ledger


def _money(v: Decimal | None) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _pct(v: Decimal | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def render_margins(rows: list[TenantMargin], features: bool) -> str:
    head = ["tenant", "revenue", "source", "llm cost", "margin", "cost share", "trend"]
    body = []
    for t in rows:
        trend = " ← ".join(_pct(s) for _, s in t.trend)
        body.append(
            [
                t.tenant,
                _money(t.revenue_usd),
                t.revenue_source,
                f"{t.cost_usd:,.4f}",
                _money(t.gross_margin_usd),
                _pct(t.cost_share),
                f"{t.direction} ({trend})" if trend else t.direction,
            ]
        )
        if features:
            for f in t.features:
                body.append(
                    [
                        f"  · {f.feature or '(no feature)'}",
                        "",
                        "",
                        f"{f.cost_usd:,.4f}",
                        "",
                        _pct(f.share_of_revenue),
                        "",
                    ]
                )
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    right = {1, 3, 4, 5}

    def fmt(r: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body)])


@click.command("margins")
@config_option
@click.option("--period", default=None, help="Month, YYYY-MM (default: this month, UTC).")
@click.option(
    "--features/--no-features",
    default=True,
    show_default=True,
    help="Show each tenant's features under it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def margins_cmd(config_path: str | None, period: str | None, features: bool, as_json: bool) -> None:
    """Revenue, LLM cost and gross margin per tenant and feature, worst first."""
    if period is not None and not is_month(period):
        raise click.BadParameter(
            f"{period[:20]!r} is not a month: YYYY-MM, from {FIRST_MONTH} to {LAST_MONTH}",
            param_hint="--period",
        )
    period = period or month_of(datetime.now(UTC))
    loaded = load(config_path)
    book = RevenueBook(loaded.config)

    async def report(ledger: Ledger) -> list[TenantMargin]:
        book.replace_recorded(await ledger.list_revenue())
        return await margins(ledger, book, period)

    rows = with_ledger(loaded, report)
    if as_json:
        import orjson

        click.echo(orjson.dumps([r.as_json() for r in rows], option=orjson.OPT_INDENT_2))
    elif not rows:
        click.echo(f"no tenants with revenue or usage in {period}")
    else:
        click.echo(f"Margins for {period} (worst first)\n")
        click.echo(render_margins(rows, features))


@click.group("revenue")
def revenue_group() -> None:
    """Record what tenants pay (a billing export)."""


@revenue_group.command("import")
@config_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def import_cmd(config_path: str | None, path: str) -> None:
    """Import PATH, a CSV with columns tenant, period (YYYY-MM), amount, currency (USD)."""
    loaded = load(config_path)
    try:
        entries = parse_revenue_csv(Path(path).read_text(encoding="utf-8"), Path(path).name)
    except APIError as exc:
        raise click.ClickException(exc.message) from None

    with_ledger(loaded, lambda ledger: ledger.set_revenue(entries))
    total = sum((e.amount for e in entries), Decimal(0))
    tenants = len({e.tenant for e in entries})
    click.echo(f"imported {len(entries)} revenue rows for {tenants} tenants, ${total:,.2f} in all")
