"""The independence report read from a real ledger: the same records give the same report on
SQLite and PostgreSQL (the ledger suite's fixtures, ``test_ledger.py``).

A call that failed over from one provider to another is one request, at the provider that
answered; the failed attempt's tokens and spend stay with the provider that billed them. A cache
hit reached no provider.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from passerelle.sovereignty.drill import drill
from passerelle.sovereignty.independence import REPORT_GROUPS, TargetInfo, Topology, independence
from passerelle.store.base import Ledger
from passerelle.store.records import CacheOutcome, Status
from tests.unit.test_ledger import ledger, stores, usage_record  # noqa: F401

pytestmark = pytest.mark.asyncio(loop_scope="function")

TOPOLOGY = Topology(
    {"us": "US", "eu": "EU"},
    {"m": (TargetInfo("us", "us-m", "US", None), TargetInfo("eu", "eu-m", "EU", None))},
)


async def test_failover_and_cache_hits_are_counted_where_they_belong(
    ledger: Ledger,  # noqa: F811
) -> None:
    failed = usage_record(
        "r1", provider="us", model="m", status=Status.ATTEMPT_FAILED, cost_usd=Decimal("0.001")
    )
    served = usage_record("r1", attempt=1, provider="eu", model="m", cost_usd=Decimal("0.003"))
    plain = usage_record("r2", provider="eu", model="m", cost_usd=Decimal("0.004"), feature="x")
    hit = usage_record("r3", provider=None, model="m", cost_usd=Decimal(0), cache=CacheOutcome.HIT)
    for rec in (failed, served, plain, hit):
        await ledger.record(rec)
    rows = await ledger.usage(REPORT_GROUPS)
    report = independence(TOPOLOGY, rows, since=None, until=None)
    shares = {s["name"]: s for s in report["providers"]}  # type: ignore[attr-defined]
    assert (shares["eu"]["requests"], shares["us"]["requests"]) == (2, 0)
    assert Decimal(shares["us"]["cost_usd"]) == Decimal("0.001")
    assert Decimal(shares["eu"]["cost_usd"]) == Decimal("0.007")
    assert shares["eu"]["spend_share"] == pytest.approx(0.875)
    assert shares["us"]["tokens"] == 1500  # the failed attempt's tokens, billed by the US
    assert report["totals"]["not_sent"] == 1  # type: ignore[index]
    concentration = report["concentration"]["provider"]  # type: ignore[index]
    assert concentration["requests_hhi"] == 10000  # every request was answered in the EU
    assert concentration["spend_hhi"] == round(87.5**2 + 12.5**2)
    features = {f["feature"]: f for f in report["features"]}  # type: ignore[attr-defined]
    assert features["x"]["totals"]["requests"] == 1
    exit_eu = drill(TOPOLOGY, "eu", rows, since=None, until=None)
    [chat, x] = sorted(exit_eu["features"], key=lambda f: f["feature"])  # type: ignore[arg-type]
    assert (chat["provider_requests"], chat["provider_requests_share"]) == (1, 0.5)
    assert x["provider_spend_share"] == 1.0
