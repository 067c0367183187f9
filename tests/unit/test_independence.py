"""The independence report's and the exit drill's arithmetic, from rows and a topology.

The integration tests (``tests/integration/test_independence.py``) check the report against a
real gateway's ledger; these pin the edges: the HHI's scale and readings, a failed attempt that
adds spend but no request, a provider gone from the configuration, unpriced targets, routes.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from passerelle.pricing.catalogue import configured_price
from passerelle.sovereignty.classes import data_policy
from passerelle.sovereignty.drill import UnknownProviderError, drill
from passerelle.sovereignty.independence import (
    TargetInfo,
    Topology,
    fallbacks,
    hhi,
    independence,
    reading,
)
from passerelle.store.records import UsageRow


def row(provider: str | None, requests: int, usd: str, **group: str | None) -> UsageRow:
    return UsageRow(
        group={"provider": provider, "model": "m", "feature": None, "tenant": "t", **group},
        requests=requests,
        input_tokens=10 * requests,
        output_tokens=5 * requests,
        cached_tokens=0,
        cost_usd=Decimal(usd),
        unpriced_requests=0,
        errors=0,
    )


def t(provider: str, jurisdiction: str | None, usd: int | None = 1) -> TargetInfo:
    price = None if usd is None else configured_price(Decimal(usd), Decimal(usd), None)
    return TargetInfo(provider, f"{provider}-model", jurisdiction, price)


def test_the_index_runs_from_near_zero_to_ten_thousand() -> None:
    assert hhi([7]) == 10000
    assert hhi([1, 1]) == 5000
    assert hhi([1] * 100) == 100
    assert hhi([]) is None and hhi([0, 0]) is None
    assert [reading(v) for v in (1499, 1500, 2500, 2501)] == [
        "unconcentrated",
        "moderately concentrated",
        "moderately concentrated",
        "highly concentrated",
    ]


def test_a_failed_attempt_adds_spend_but_no_request_and_unknown_providers_are_kept() -> None:
    topo = Topology({"a": "EU"}, {"m": (t("a", "EU"),)})
    rows = [row("a", 3, "0.3"), row("b", 0, "0.1"), row("gone", 1, "0.6"), row(None, 2, "0")]
    report = independence(topo, rows, since=None, until=None)
    shares = {s["name"]: s for s in report["providers"]}  # type: ignore[attr-defined]
    assert shares["b"]["requests"] == 0 and shares["b"]["spend_share"] == pytest.approx(0.1)
    assert shares["gone"]["jurisdiction"] == "unknown"
    assert report["totals"]["not_sent"] == 2  # type: ignore[index]
    assert report["concentration"]["provider"]["requests_hhi"] == hhi([3, 0, 1])  # type: ignore[index]


def test_without_a_policy_a_fallback_is_any_other_provider() -> None:
    topo = Topology({"a": "US", "b": None}, {"m": (t("a", "US"), t("a", "US"), t("b", None))})
    [m] = fallbacks(topo)
    assert m["providers"] == ["a", "b"] and m["classes_unserved"] == []
    assert [(w["provider"], w["fallback"], w["to"]) for w in m["without"]] == [  # type: ignore[attr-defined]
        ("a", True, ["b"]),
        ("b", True, ["a"]),
    ]


def test_a_provider_with_no_jurisdiction_is_no_fallback_for_a_restricted_class() -> None:
    policy = data_policy({"open": (["any"], "allow"), "eu": (["EU"], "allow")}, "open", {}, {})
    topo = Topology({"a": "EU", "b": None}, {"m": (t("a", "EU"), t("b", None))}, policy=policy)
    [m] = fallbacks(topo)
    without_a = m["without"][0]  # type: ignore[index]
    assert without_a["fallback"] is True and without_a["classes_without_fallback"] == ["eu"]


def test_the_drill_prices_a_move_only_when_both_prices_are_known() -> None:
    topo = Topology(
        {"a": "US", "b": "EU", "c": "EU"},
        {
            "priced": (t("a", "US", 3), t("b", "EU", 1)),
            "unpriced": (t("a", "US"), t("c", "EU", None)),
            "solo": (t("a", "US"),),
        },
        routes={"auto": ("solo",), "mixed": ("solo", "priced")},
    )
    report = drill(topo, "a", [], since=None, until=None)
    effects = {m["model"]: m for m in report["models"]}  # type: ignore[attr-defined]
    assert Decimal(effects["priced"]["price_change"]["input_per_mtok_usd"]) == -2
    assert effects["unpriced"]["price_change"] is None
    assert report["routes"] == [
        {"route": "auto", "effect": "broken"},
        {"route": "mixed", "effect": "degraded"},
    ]
    with pytest.raises(UnknownProviderError, match="the configuration has: a, b, c"):
        drill(topo, "z", [], since=None, until=None)


def test_a_broken_route_counts_as_broken_traffic() -> None:
    topo = Topology({"a": "US"}, {"solo": (t("a", "US"),)}, routes={"auto": ("solo",)})
    rows = [row("a", 4, "0.4", model="auto", feature="f"), row("a", 1, "0.1", model="x")]
    report = drill(topo, "a", rows, since=None, until=None)
    [feature, other] = report["features"]  # type: ignore[misc]
    assert feature["feature"] == "f" and feature["broken_requests"] == 4
    assert other["broken_requests"] == 0 and other["provider_requests"] == 1
