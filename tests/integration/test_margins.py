"""Margin floors and the margins report through a real gateway, its ledger and its CLI.

A tenant on plan ``pro`` pays $1 a month and may spend 20% of it on LLM calls; model ``premium``
costs $100 per million tokens and degrades to ``cheap`` ($1 per million). One premium call with
3,000 tokens reported costs exactly $0.30, which passes the floor at once.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI, RateLimitError

from tests.fakes.gateway import ADMIN_TOKEN, TENANT_KEYS, GatewayProcess, fake_upstream_config
from tests.fakes.upstream import UpstreamProcess
from tests.integration.budget_helpers import race_raw

DEAR = "hello #usage:1000,2000,0"  # $0.30 on premium, $0.003 on cheap, $0.00135 on gpt-4o-mini
PLANS = [
    {"name": "pro", "monthly_usd": 1, "margin_floor": {"max_cost_share": 0.2, "action": "degrade"}},
    {
        "name": "strict",
        "monthly_usd": 1,
        "margin_floor": {"max_cost_share": 0.2, "action": "refuse"},
    },
]
MODELS = [
    {
        "name": "premium",
        "degrade_to": "cheap",
        "targets": [
            {
                "provider": "fake",
                "upstream_model": "premium-1",
                "price": {"input": 100, "output": 100},
            }
        ],
    },
    {
        "name": "cheap",
        "targets": [
            {"provider": "fake", "upstream_model": "cheap-1", "price": {"input": 1, "output": 1}}
        ],
    },
]


SLOTS = 12  # tenant pairs in the module's gateway: one pair per test


class Floors:
    """The module's gateway, and the two tenants of one test: ``pro`` (degrades past its floor)
    and ``strict`` (refuses past it), both fresh."""

    def __init__(self, gw: GatewayProcess, keys: dict[str, str], pro: str, strict: str) -> None:
        self.gw, self.keys, self.pro, self.strict = gw, keys, pro, strict

    def client(self, tenant: str) -> OpenAI:
        key = TENANT_KEYS.get(tenant) or self.keys[tenant]
        return OpenAI(base_url=self.gw.base_url, api_key=key, max_retries=0)

    def ask(self, tenant: str, model: str = "premium", feature: str | None = None) -> Any:
        headers = {"X-Passerelle-Feature": feature} if feature else {}
        with self.client(tenant) as c:
            return c.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": DEAR}], extra_headers=headers
            )

    def rows(self, tenant: str) -> list[dict[str, Any]]:
        return self.gw.ledger_rows("tenant = ?", (tenant,))

    def admin(self, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            self.gw.url + path,
            method="GET" if body is None else "POST",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def mine(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r["tenant"] in (self.pro, self.strict)]


@pytest.fixture(scope="module")
def shared(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, list[tuple[str, str]], dict[str, str]]]:
    config = fake_upstream_config(upstream.url)
    config["models"] += MODELS
    config["plans"] = PLANS
    suffix = uuid.uuid4().hex[:6]
    pairs, keys, env = [], {}, {}
    for i in range(SLOTS):
        pair = (f"pro{i}-{suffix}", f"strict{i}-{suffix}")
        pairs.append(pair)
        for tenant, plan in zip(pair, ("pro", "strict"), strict=True):
            var = f"MARGIN_KEY_{plan.upper()}_{i}"
            keys[tenant] = env[var] = f"sk-{plan}{i}-" + uuid.uuid4().hex
            config["tenants"].append({"name": tenant, "plan": plan, "keys": [f"env:{var}"]})
    with GatewayProcess(tmp_path_factory.mktemp("margins"), config, env=env) as gw:
        yield gw, pairs, keys


@pytest.fixture
def floors(
    shared: tuple[GatewayProcess, list[tuple[str, str]], dict[str, str]],
    fresh_upstream: UpstreamProcess,
) -> Floors:
    gw, pairs, keys = shared
    pro, strict = pairs.pop()
    return Floors(gw, keys, pro, strict)


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def test_past_the_margin_floor_premium_is_served_by_the_cheaper_model(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    first = floors.ask(floors.pro)
    assert first.headers["x-passerelle-target"] == "fake/premium-1"
    assert "x-passerelle-degraded" not in first.headers
    assert first.headers["x-passerelle-cost-usd"] == "0.3"

    second = floors.ask(floors.pro)
    assert second.status_code == 200
    assert second.headers["x-passerelle-degraded"] == "margin-floor"
    assert second.headers["x-passerelle-target"] == "fake/cheap-1"
    assert second.headers["x-passerelle-cost-usd"] == "0.003"
    assert fresh_upstream.stats()["last_request"]["model"] == "cheap-1"

    rows = floors.rows(floors.pro)
    assert [(r["model"], r["upstream_model"], r["decision"]) for r in rows] == [
        ("premium", "premium-1", None),
        ("premium", "cheap-1", "degraded: margin floor premium -> cheap"),
    ]


def test_under_the_margin_floor_nothing_is_degraded(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    # $0.003 a call on cheap: far under 20% of $1
    for _ in range(3):
        raw = floors.ask(floors.pro, model="cheap")
        assert "x-passerelle-degraded" not in raw.headers
    raw = floors.ask(floors.pro)
    assert raw.headers["x-passerelle-target"] == "fake/premium-1"
    assert "x-passerelle-degraded" not in raw.headers


def test_past_a_refusing_margin_floor_calls_get_429_margin_floor(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    floors.ask(floors.strict)
    with pytest.raises(RateLimitError) as exc:
        floors.ask(floors.strict)
    err = exc.value.body
    assert exc.value.status_code == 429
    assert err["code"] == "margin_floor" and err["type"] == "insufficient_quota"
    assert floors.strict in err["message"] and "20%" in err["message"]
    # the cheap model is refused too: the floor is the tenant's, not the model's
    with pytest.raises(RateLimitError):
        floors.ask(floors.strict, model="cheap")
    assert fresh_upstream.stats()["requests"] == 1
    decisions = [(r["status"], r["error_code"], r["decision"]) for r in floors.rows(floors.strict)]
    assert (
        decisions[1:] == [("error", "margin_floor", "refused: margin floor (20% of revenue)")] * 2
    )
    # another tenant is not affected
    assert floors.ask("acme", model="premium").headers["x-passerelle-target"] == "fake/premium-1"
    # the margins report counts the one served call, not the refusals
    [strict] = [t for t in floors.admin("/admin/margins")["data"] if t["tenant"] == floors.strict]
    assert strict["requests"] == 1


def test_revenue_posted_to_the_admin_api_lifts_the_floor_at_once(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    floors.ask(floors.pro)
    assert floors.ask(floors.pro).headers["x-passerelle-degraded"] == "margin-floor"
    floors.ask(floors.strict)
    with pytest.raises(RateLimitError):
        floors.ask(floors.strict)
    posted = floors.admin(
        "/admin/revenue",
        [
            {"tenant": floors.pro, "period": this_month(), "amount": "10"},
            {"tenant": floors.strict, "period": this_month(), "amount": 10, "currency": "usd"},
        ],
    )
    assert posted == {"object": "list", "recorded": 2}
    # $0.303 of $10 and $0.30 of $10: both under 20% now
    again = floors.ask(floors.pro)
    assert again.headers["x-passerelle-target"] == "fake/premium-1"
    assert "x-passerelle-degraded" not in again.headers
    assert floors.ask(floors.strict).status_code == 200
    listed = floors.mine(floors.admin("/admin/revenue")["data"])
    assert {(e["tenant"], e["amount"]) for e in listed} == {
        (floors.pro, "10.000000000000"),
        (floors.strict, "10.000000000000"),
    }


def test_bad_revenue_posted_to_the_admin_api_is_a_400_naming_the_field(floors: Floors) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        floors.admin("/admin/revenue", {"tenant": floors.pro, "period": "2024-13", "amount": 1})
    assert exc.value.code == 400
    err = json.loads(exc.value.read())["error"]
    exc.value.close()
    assert err["param"] == "period" and "YYYY-MM" in err["message"]


def _margin_of(rows: list[dict[str, Any]], tenant: str) -> dict[str, Any]:
    return next(r for r in rows if r["tenant"] == tenant)


def test_margins_report_revenue_cost_margin_and_features_worst_first(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    floors.ask(floors.pro, feature="summarize")  # $0.30 on premium
    floors.ask(floors.pro, feature="chat")  # degraded: $0.003 on cheap
    floors.ask(floors.strict, model="cheap")  # $0.003
    floors.ask(floors.strict, model="cheap", feature="chat")  # $0.003
    floors.ask("acme", model="gpt-4o-mini")  # no plan, no revenue

    report = floors.admin("/admin/margins")
    assert report["object"] == "margins" and report["period"] == this_month()
    rows = report["data"]
    # cost with no known revenue first, then by cost share, then tenants with nothing at all
    order = [r["tenant"] for r in rows]
    assert order[0] == "acme" and order[-1] == "globex"
    assert order.index(floors.pro) < order.index(floors.strict)
    acme = _margin_of(rows, "acme")
    assert (
        acme["revenue_usd"],
        acme["revenue_source"],
        acme["gross_margin_usd"],
        acme["cost_share"],
    ) == (None, "unknown", None, None)
    assert Decimal(acme["llm_cost_usd"]) >= Decimal("0.00135")
    pro = _margin_of(rows, floors.pro)
    assert {
        k: pro[k]
        for k in (
            "revenue_usd",
            "revenue_source",
            "requests",
            "llm_cost_usd",
            "gross_margin_usd",
            "cost_share",
            "margin_pct",
            "direction",
        )
    } == {
        "revenue_usd": "1.000000000000",
        "revenue_source": "plan pro",
        "requests": 2,
        "llm_cost_usd": "0.303000000000",
        "gross_margin_usd": "0.697000000000",
        "cost_share": "0.3030",
        "margin_pct": "69.70",
        "direction": "new",
    }
    assert pro["features"] == [
        {
            "feature": "summarize",
            "requests": 1,
            "llm_cost_usd": "0.300000000000",
            "share_of_revenue": "0.3000",
        },
        {
            "feature": "chat",
            "requests": 1,
            "llm_cost_usd": "0.003000000000",
            "share_of_revenue": "0.0030",
        },
    ]
    strict = _margin_of(rows, floors.strict)
    assert (strict["llm_cost_usd"], strict["gross_margin_usd"], strict["cost_share"]) == (
        "0.006000000000",
        "0.994000000000",
        "0.0060",
    )
    assert [(f["feature"], f["llm_cost_usd"]) for f in strict["features"]] == [
        (None, "0.003000000000"),
        ("chat", "0.003000000000"),
    ]
    globex = _margin_of(rows, "globex")
    assert (globex["requests"], globex["llm_cost_usd"], globex["features"]) == (
        0,
        "0.000000000000",
        [],
    )

    # the CLI reads the same ledger and says the same
    cli = floors.gw.cli("margins", "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == rows


def test_revenue_imported_with_the_cli_shows_in_the_margins_report(
    floors: Floors, tmp_path: Path
) -> None:
    floors.ask(floors.strict, model="cheap")  # $0.003
    floors.ask(floors.pro)  # $0.30
    csv = tmp_path / "billing.csv"
    csv.write_text(
        f"tenant,period,amount,currency\n{floors.strict},{this_month()},0.01,USD\n"
        f"{floors.pro},{this_month()},3,USD\n"
    )
    imported = floors.gw.cli("revenue", "import", str(csv))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "imported 2 revenue rows for 2 tenants, $3.01 in all"

    out = floors.gw.cli("margins", "--json")
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["tenant"] in (floors.pro, floors.strict)]
    # $0.003 of $0.01 is worse than $0.30 of $3
    assert [
        (r["tenant"], r["revenue_usd"], r["revenue_source"], r["cost_share"], r["gross_margin_usd"])
        for r in rows
    ] == [
        (floors.strict, "0.010000000000", "recorded", "0.3000", "0.007000000000"),
        (floors.pro, "3.000000000000", "recorded", "0.1000", "2.700000000000"),
    ]
    table = floors.gw.cli("margins")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"Margins for {this_month()} (worst first)"
    strict_line = next(ln for ln in lines if ln.startswith(floors.strict))
    assert strict_line.split()[1:6] == ["0.01", "recorded", "0.0030", "0.01", "30.0%"]
    pro_line = next(ln for ln in lines if ln.startswith(floors.pro))
    assert pro_line.split()[1:6] == ["3.00", "recorded", "0.3000", "2.70", "10.0%"]
    assert lines.index(strict_line) < lines.index(pro_line)


def test_a_billing_csv_with_a_bad_row_is_refused_naming_its_line(
    floors: Floors, tmp_path: Path
) -> None:
    csv = tmp_path / "billing.csv"
    csv.write_text(
        f"tenant,period,amount\n{floors.pro},{this_month()},5\n"
        f"{floors.strict},{this_month()},five dollars\n"
    )
    out = floors.gw.cli("revenue", "import", str(csv))
    assert out.returncode == 1
    assert "billing.csv:3: amount is not a number" in out.stderr
    assert "Traceback" not in out.stderr
    # nothing of the file was imported
    assert floors.mine(floors.admin("/admin/revenue")["data"]) == []


def test_a_billing_csv_without_the_columns_is_refused(floors: Floors, tmp_path: Path) -> None:
    csv = tmp_path / "billing.csv"
    csv.write_text("customer,month,total\nacme,2024-05,5\n")
    out = floors.gw.cli("revenue", "import", str(csv))
    assert out.returncode == 1
    assert "billing.csv: the header must name the columns tenant, period, amount" in out.stderr


def test_margins_totals_are_exact_over_many_small_calls(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    for _ in range(7):
        floors.ask(floors.strict, model="cheap")
    rows = floors.admin("/admin/margins")["data"]
    strict = _margin_of(rows, floors.strict)
    assert strict["requests"] == 7
    assert Decimal(strict["llm_cost_usd"]) == Decimal("0.021")
    assert Decimal(strict["gross_margin_usd"]) == Decimal("0.979")
    assert strict["cost_share"] == "0.0210"


def test_the_margin_floor_trips_the_same_with_redis_counters(
    tmp_path: Path, fresh_upstream: UpstreamProcess, redis_url: str
) -> None:
    tenant, key = "pro-" + uuid.uuid4().hex[:10], "sk-pro-" + uuid.uuid4().hex
    config = fake_upstream_config(fresh_upstream.url, redis=redis_url)
    config["models"] += MODELS
    config["plans"] = PLANS
    config["tenants"].append({"name": tenant, "plan": "pro", "keys": ["env:PRO_KEY"]})
    with GatewayProcess(tmp_path / "gw", config, env={"PRO_KEY": key}) as gw:
        floors = Floors(gw, {tenant: key}, tenant, tenant)
        assert "x-passerelle-degraded" not in floors.ask(tenant).headers
        second = floors.ask(tenant)
        assert second.headers["x-passerelle-degraded"] == "margin-floor"
        assert second.headers["x-passerelle-target"] == "fake/cheap-1"
        # a restarted gateway finds the month's cost again (ledger, then the shared counter)
        gw.stop()
        gw.start()
        assert floors.ask(tenant).headers["x-passerelle-degraded"] == "margin-floor"


def _burst(urls: list[str], key: str, n: int = 30) -> list[int]:
    body = {"model": "premium", "messages": [{"role": "user", "content": DEAR}]}
    return [s for s, _ in asyncio.run(race_raw(urls, key, n, body))]


def test_a_burst_is_degraded_from_the_first_request_past_the_floor(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    # one premium call may cost $0.41 (4,096 tokens of output allowed): the first call's
    # reservation alone passes the $0.20 floor, so every call that finds it in flight is degraded
    assert _burst([floors.gw.url], floors.keys[floors.pro]) == [200] * 30
    rows = floors.rows(floors.pro)
    assert len(rows) == 30
    premium = [r for r in rows if r["upstream_model"] == "premium-1"]
    assert len(premium) == 1 and premium[0]["decision"] is None
    assert {r["decision"] for r in rows if r not in premium} == {
        "degraded: margin floor premium -> cheap"
    }


def test_a_burst_is_refused_from_the_first_request_past_a_refusing_floor(
    floors: Floors, fresh_upstream: UpstreamProcess
) -> None:
    statuses = _burst([floors.gw.url], floors.keys[floors.strict])
    assert sorted(statuses) == [200] + [429] * 29
    assert fresh_upstream.stats()["requests"] == 1


def test_a_burst_over_two_replicas_passes_the_floor_once(
    tmp_path: Path, fresh_upstream: UpstreamProcess, redis_url: str
) -> None:
    # the floor is checked in the same atomic step as the reservation, across replicas
    tenant, key = "pro-" + uuid.uuid4().hex[:10], "sk-pro-" + uuid.uuid4().hex
    config = fake_upstream_config(fresh_upstream.url, redis=redis_url)
    config["models"] += MODELS
    config["plans"] = PLANS
    config["tenants"].append({"name": tenant, "plan": "pro", "keys": ["env:PRO_KEY"]})
    gws = [GatewayProcess(tmp_path / f"gw{i}", config, env={"PRO_KEY": key}) for i in range(2)]
    with gws[0], gws[1]:
        assert _burst([g.url for g in gws], key) == [200] * 30
        rows = [r for g in gws for r in g.ledger_rows("tenant = ?", (tenant,))]
    assert len(rows) == 30
    assert sum(1 for r in rows if r["upstream_model"] == "premium-1") == 1
