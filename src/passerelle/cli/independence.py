"""``passerelle independence``: how much of the traffic each provider and jurisdiction carries,
how concentrated it is, and which models could carry on without each provider.

The report is ``sovereignty/independence.py``'s, computed here from the configuration and the
ledger (the running gateway answers the same at ``GET /admin/independence``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click
import orjson

from passerelle.cli.loading import config_option, load, with_ledger
from passerelle.cli.tables import cell, format_option, share, table
from passerelle.errors import APIError
from passerelle.pricing.catalogue import Catalogue
from passerelle.pricing.cost import usd_report
from passerelle.sovereignty.independence import REPORT_GROUPS, independence, topology
from passerelle.store.query import parse_when

SHARE_HEAD = ["requests", "req_share", "tokens", "tok_share", "cost_usd", "spend_share", "unpriced"]


def _share_cells(s: dict[str, Any]) -> list[str]:
    return [
        str(s["requests"]),
        share(s["requests_share"]),
        str(s["tokens"]),
        share(s["tokens_share"]),
        usd_report(Decimal(s["cost_usd"])),
        share(s["spend_share"]),
        str(s["unpriced_requests"]),
    ]


def _total_cells(t: dict[str, Any]) -> list[str]:
    whole = "100.0%"
    return [
        str(t["requests"]),
        whole if t["requests"] else "-",
        str(t["tokens"]),
        whole if t["tokens"] else "-",
        usd_report(Decimal(t["cost_usd"])),
        whole if Decimal(t["cost_usd"]) else "-",
        str(t["unpriced_requests"]),
    ]


def _hhi(value: Any, reading: Any) -> str:
    return "-" if value is None else f"{value} ({reading})"


def render_breakdown(part: dict[str, Any]) -> list[str]:
    if not part["providers"]:
        return [f"no calls reached a provider ({part['totals']['not_sent']} not sent)"]
    providers = [[p["name"], p["jurisdiction"], *_share_cells(p)] for p in part["providers"]]
    totals = part["totals"]
    out = [
        table(
            ["provider", "jurisdiction", *SHARE_HEAD],
            providers,
            labels=2,
            total=["TOTAL", "", *_total_cells(totals)],
        ),
        "",
        table(
            ["jurisdiction", *SHARE_HEAD],
            [[j["name"], *_share_cells(j)] for j in part["jurisdictions"]],
            total=["TOTAL", *_total_cells(totals)],
        ),
    ]
    if totals["not_sent"]:
        out.append(f"not sent to any provider (cache hits, refusals): {totals['not_sent']}")
    out.append("")
    conc = part["concentration"]
    out.append(
        table(
            ["concentration", "on requests", "on spend"],
            [
                [
                    scope,
                    _hhi(c["requests_hhi"], c["requests_reading"]),
                    _hhi(c["spend_hhi"], c["spend_reading"]),
                ]
                for scope, c in conc.items()
            ],
            labels=3,
        )
    )
    return out


def render_table(report: dict[str, Any]) -> str:
    window = (
        " ".join(f"{k} {report[k]}" for k in ("since", "until") if report.get(k)) or "all recorded"
    )
    out = [f"Traffic by provider and jurisdiction ({window})", ""]
    out += render_breakdown(report)
    out += ["", f"HHI: {report['hhi_scale']}.", "", "Per feature", ""]
    rows = []
    for f in report["features"]:
        conc = f["concentration"]["provider"]
        for p in f["providers"]:
            rows.append(
                [
                    cell(f["feature"]),
                    p["name"],
                    p["jurisdiction"],
                    *_share_cells(p),
                    cell(conc["requests_hhi"]),
                    cell(conc["spend_hhi"]),
                ]
            )
    out.append(
        table(
            ["feature", "provider", "jurisdiction", *SHARE_HEAD, "req_hhi", "spend_hhi"],
            rows,
            labels=3,
        )
        if rows
        else "no calls reached a provider"
    )
    out += ["", "Fallback outside each provider (from the configuration)", ""]
    fb = []
    for m in report["fallbacks"]:
        for w in m["without"]:
            fb.append(
                [
                    m["model"],
                    w["provider"],
                    "yes" if w["fallback"] else "NO",
                    cell(w["to"]),
                    cell(w["classes_without_fallback"]),
                ]
            )
    out.append(
        table(["model", "without", "fallback", "to", "classes without fallback"], fb, labels=5)
    )
    unserved = [f"{m['model']}: {', '.join(m['classes_unserved'])}"
                for m in report["fallbacks"] if m["classes_unserved"]]  # fmt: skip
    if unserved:
        out += ["", "Data classes no target of the model may reach: " + "; ".join(unserved)]
    return "\n".join(out)


@click.command("independence")
@config_option
@click.option("--since", default=None, help="ISO date/time or a span like 24h, 7d.")
@click.option("--until", default=None, help="ISO date/time or a span like 1h.")
@format_option
def independence_cmd(
    config_path: str | None, since: str | None, until: str | None, fmt: str
) -> None:
    """Share of requests, tokens and spend by provider and by jurisdiction, overall and per
    feature, their concentration (Herfindahl-Hirschman index, 0..10000: over 2500 is highly
    concentrated), and for each model whether a fallback exists outside each provider, data-class
    policy included. From the ledger and the configuration."""
    try:
        since_dt = parse_when(since, "since")
        until_dt = parse_when(until, "until")
    except APIError as exc:
        raise click.UsageError(exc.message) from None
    loaded = load(config_path)
    rows = with_ledger(loaded, lambda ledger: ledger.usage(REPORT_GROUPS, since_dt, until_dt))
    topo = topology(loaded.config, Catalogue.shipped(), datetime.now(UTC).date())
    report = independence(
        topo,
        rows,
        since=since_dt.isoformat() if since_dt else None,
        until=until_dt.isoformat() if until_dt else None,
    )
    if fmt == "json":
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_table(report))
