"""The savings report, ``GET /admin/savings`` and ``passerelle savings``, from a real gateway's
ledger: per tenant, feature and period, what was paid, what the cache saved, and the hit rate."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.fakes.gateway import GatewayProcess, Sdk
from tests.fakes.upstream import UpstreamProcess
from tests.integration.cache_helpers import (
    ONE_CALL_PUSD,
    admin_get,
    ask,
    cache_config,
    new_tenant,
    unique,
)

ONE_CALL = Decimal(ONE_CALL_PUSD) / 10**12


@pytest.fixture(scope="module")
def gw(
    upstream: UpstreamProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("savings"), cache_config(upstream.url)) as g:
        yield g


def traffic(gw: GatewayProcess, sdk: Sdk) -> str:
    """One tenant: feature `faq` asks one question 4 times (1 miss, 3 hits) and another once,
    feature `chat` asks once without temperature (not looked up)."""
    tenant, key = new_tenant(gw)
    client = sdk(gw, key)
    faq = {"X-Passerelle-Feature": "faq"}
    question = unique()
    for _ in range(4):
        ask(client, question, extra_headers=faq)
    ask(client, unique(), extra_headers=faq)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": unique()}],
        extra_headers={"X-Passerelle-Feature": "chat"},
    )
    return tenant


def test_the_report_per_tenant_and_feature_says_what_the_cache_saved(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    tenant = traffic(gw, sdk)
    assert fresh_upstream.stats()["requests"] == 3
    report = admin_get(gw, "/admin/savings?group_by=tenant,feature,month&since=1h")
    mine = {r["feature"]: r for r in report["data"] if r["tenant"] == tenant}
    faq, chat = mine["faq"], mine["chat"]
    assert (faq["requests"], faq["cache_lookups"], faq["cache_hits"]) == (5, 5, 3)
    assert faq["hit_rate"] == 0.6
    assert Decimal(faq["cost_usd"]) == 2 * ONE_CALL
    assert Decimal(faq["saved_usd"]) == 3 * ONE_CALL
    assert Decimal(faq["cost_without_savings_usd"]) == 5 * ONE_CALL
    assert faq["by_source"]["cache_exact"] == {
        "requests": 3,
        "saved_usd": f"{3 * ONE_CALL:.12f}",
    }
    assert (chat["requests"], chat["cache_lookups"], chat["cache_hits"]) == (1, 0, 0)
    assert chat["hit_rate"] is None and Decimal(chat["saved_usd"]) == 0
    assert len({r["month"] for r in mine.values()}) == 1
    totals = report["totals"]
    assert totals["requests"] >= 6 and Decimal(totals["saved_usd"]) >= 3 * ONE_CALL


def test_the_command_prints_the_same_figures(
    gw: GatewayProcess, fresh_upstream: UpstreamProcess, sdk: Sdk
) -> None:
    tenant = traffic(gw, sdk)
    out = gw.cli("savings", "--by", "tenant,feature")
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith(tenant)]
    faq = next(cells for cells in lines if cells[1] == "faq")
    head = out.stdout.splitlines()[0].split()
    row = dict(zip(head, faq, strict=True))
    assert (row["requests"], row["lookups"], row["hits"], row["hit_rate"]) == (
        "5",
        "5",
        "3",
        "60.0%",
    )
    assert Decimal(row["saved:cache_exact"]) == Decimal(row["saved_usd"]) == round(3 * ONE_CALL, 6)
    assert Decimal(row["without_savings_usd"]) == round(5 * ONE_CALL, 6)
    assert out.stdout.splitlines()[-1].startswith("TOTAL")


def test_a_bad_parameter_is_a_400_naming_it(gw: GatewayProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        admin_get(gw, "/admin/savings?group_by=colour")
    assert exc.value.code == 400
    exc.value.close()
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(gw.url + "/admin/savings", timeout=10)
    assert anonymous.value.code == 401
    anonymous.value.close()
