"""``passerelle drill --without PROVIDER``: the exit drill, what would break without a provider.

Without ``--live`` the report is computed here, from the configuration and the ledger
(``sovereignty/drill.py``), and nothing is sent anywhere. With ``--live`` the command asks the
running gateway (``POST /admin/drill``, with the admin token) to send each model that keeps a
target a synthetic call through its own chain with the provider left out, so that the policy,
breakers and fallbacks of the gateway in service are what is tested, and its ledger meters the
calls (feature ``exit-drill``). An unknown provider is a usage error listing the known ones
(exit status 2); a live call that failed makes the exit status 1.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import click
import orjson

from passerelle.cli.loading import config_option, load, with_ledger
from passerelle.cli.tables import cell, format_option, share, table
from passerelle.config.load import Loaded
from passerelle.errors import APIError
from passerelle.pricing.catalogue import Catalogue
from passerelle.sovereignty.drill import UnknownProviderError, check_provider, drill
from passerelle.sovereignty.independence import REPORT_GROUPS, topology
from passerelle.store.query import parse_when


def _price(change: Any) -> str:
    if not change:
        return "-"
    a, b = (Decimal(change[k]).normalize() for k in ("input_per_mtok_usd", "output_per_mtok_usd"))
    return f"{a:+f} / {b:+f}"


def _exposure(rows: list[dict[str, Any]], column: str) -> str:
    if not rows:
        return f"no {column} called it or its broken models in the period"
    head = [column, "requests", "broken", "broken_share", "broken_spend", "at_provider",
            "provider_share", "provider_spend"]  # fmt: skip
    body = [
        [
            cell(r[column]),
            str(r["requests"]),
            str(r["broken_requests"]),
            share(r["broken_requests_share"]),
            share(r["broken_spend_share"]),
            str(r["provider_requests"]),
            share(r["provider_requests_share"]),
            share(r["provider_spend_share"]),
        ]
        for r in rows
    ]
    return table(head, body)


def render_table(report: dict[str, Any]) -> str:
    window = " ".join(f"{k} {report[k]}" for k in ("since", "until") if report.get(k))
    out = [f"Exit drill without {report['without']} (jurisdiction {report['jurisdiction']})", ""]
    broken = report["broken_models"]
    out.append(f"Models with no target left: {', '.join(broken) if broken else 'none'}")
    out.append("")
    models = [
        [
            m["model"],
            m["effect"],
            cell(m["to"]),
            _price(m["price_change"]),
            cell(m["classes_stranded"]),
        ]
        for m in report["models"]
    ]
    out.append(
        table(
            ["model", "effect", "to", "price change in/out per Mtok", "classes stranded"],
            models,
            labels=5,
        )
        if models
        else "no model has a target at this provider"
    )
    for r in report["routes"]:
        out.append(f"route {r['route']}: {r['effect']}")
    stranded = report["classes_stranded"]
    out += ["", f"Data classes left with no allowed target: {', '.join(stranded) or 'none'}"]
    out += [
        "",
        f"Features ({window or 'all recorded'})",
        "",
        _exposure(report["features"], "feature"),
    ]
    out += ["", "Tenants", "", _exposure(report["tenants"], "tenant")]
    live = report.get("live")
    if live is not None:
        failed = sum(1 for r in live if r["status"] != "ok")
        out += ["", f"Live: {len(live)} synthetic calls, {failed} failed", ""]
        rows = [
            [r["model"], r["status"], cell(r["target"]), f"{r['latency_ms']:.1f}", cell(r["error"])]
            for r in live
        ]
        out.append(
            table(["model", "status", "target", "latency_ms", "error"], rows, labels=3)
            if rows
            else "no model keeps a target: nothing to send"
        )
    return "\n".join(out)


def gateway_url(loaded: Loaded, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    server = loaded.config.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    return f"http://{host}:{server.port}"


def post_drill(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=600)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}/admin/drill", json=body, headers=headers) as resp,
        ):
            data: dict[str, Any] = orjson.loads(await resp.read())
            if resp.status != 200:
                error = data.get("error", {}) if isinstance(data, dict) else {}
                raise click.UsageError(f"the gateway refused the drill ({resp.status}): "
                                       f"{error.get('message', 'no message')}")  # fmt: skip
            return data

    try:
        return asyncio.run(run())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        raise click.ClickException(
            f"cannot run the live drill at {url}: {exc or type(exc).__name__}; is the gateway "
            "running there (--url)?"
        ) from None


@click.command("drill")
@config_option
@click.option("--without", "provider", required=True, help="The provider to do without.")
@click.option("--since", default=None, help="ISO date/time or a span like 24h, 7d.")
@click.option("--until", default=None, help="ISO date/time or a span like 1h.")
@click.option(
    "--live",
    is_flag=True,
    default=False,
    help="Also send each model that keeps a target a short synthetic call through the running "
    "gateway (metered under the feature exit-drill), the provider left out.",
)
@click.option("--model", "models", multiple=True, help="--live: only these models (repeatable).")
@click.option("--tenant", default=None, help="--live: the tenant the calls are made for.")
@click.option("--data-class", default=None, help="--live: the data class of the calls.")
@click.option("--samples", default=1, show_default=True, help="--live: calls per model (1-5).")
@click.option("--url", default=None, envvar="PASSERELLE_URL", help="--live: the gateway's URL.")
@click.option(
    "--admin-token", default=None, envvar="PASSERELLE_ADMIN_TOKEN", help="--live: admin token."
)
@format_option
def drill_cmd(
    config_path: str | None,
    provider: str,
    since: str | None,
    until: str | None,
    live: bool,
    models: tuple[str, ...],
    tenant: str | None,
    data_class: str | None,
    samples: int,
    url: str | None,
    admin_token: str | None,
    fmt: str,
) -> None:
    """Which models, routes, data classes, features and tenants would break if PROVIDER
    disappeared tomorrow, which would move to another provider (and at what price difference),
    from the configuration and the ledger; with --live, proof that the rest answers."""
    try:
        since_dt = parse_when(since, "since")
        until_dt = parse_when(until, "until")
    except APIError as exc:
        raise click.UsageError(exc.message) from None
    loaded = load(config_path)
    topo = topology(loaded.config, Catalogue.shipped(), datetime.now(UTC).date())
    try:
        check_provider(topo, provider)
    except UnknownProviderError as exc:
        raise click.UsageError(exc.message) from None
    if live:
        token = admin_token or loaded.secrets.get(loaded.config.admin_token)
        if not token:
            raise click.UsageError("--live needs the admin token: --admin-token, or admin_token")
        body: dict[str, Any] = {"without": provider, "live": True, "samples": samples}
        optional = {"since": since, "until": until, "tenant": tenant, "data_class": data_class}
        body.update({k: v for k, v in optional.items() if v})
        if models:
            body["models"] = list(models)
        report = post_drill(gateway_url(loaded, url), token, body)
    else:
        rows = with_ledger(loaded, lambda ledger: ledger.usage(REPORT_GROUPS, since_dt, until_dt))
        report = drill(
            topo,
            provider,
            rows,
            since=since_dt.isoformat() if since_dt else None,
            until=until_dt.isoformat() if until_dt else None,
        )
    if fmt == "json":
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_table(report))
    if report.get("live_ok") is False:
        raise SystemExit(1)
