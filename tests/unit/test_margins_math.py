"""Margins arithmetic: months, shares, the order of tenants, the revenue book and billing CSVs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from passerelle.config.schema import Config
from passerelle.economics.margins import TenantMargin, margins, share
from passerelle.economics.revenue import RevenueBook, parse_revenue_csv
from passerelle.errors import InvalidRequestError
from passerelle.months import month_bounds, previous_month
from passerelle.store.records import RevenueEntry, UsageRecord
from passerelle.store.sqlite import SQLiteLedger


def tm(
    tenant: str, revenue: str | None, cost: str, trend: list[str | None] | None = None
) -> TenantMargin:
    return TenantMargin(
        tenant=tenant,
        period="2024-05",
        revenue_usd=None if revenue is None else Decimal(revenue),
        revenue_source="test",
        requests=1,
        cost_usd=Decimal(cost),
        trend=[
            (f"2024-0{4 - i}", None if s is None else Decimal(s)) for i, s in enumerate(trend or [])
        ],
    )


# --- months ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-12", datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01", datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)),
        ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_month_bounds_are_the_first_of_the_month_and_of_the_next(
    period: str, start: datetime, end: datetime
) -> None:
    assert month_bounds(period) == (start, end)


@pytest.mark.parametrize(
    ("period", "before"),
    [
        ("2025-01", "2024-12"),
        ("2024-12", "2024-11"),
        ("2024-03", "2024-02"),
        ("2024-10", "2024-09"),
    ],
)
def test_previous_month_crosses_the_year(period: str, before: str) -> None:
    assert previous_month(period) == before


# --- shares --------------------------------------------------------------------------------------


def test_share_is_cost_over_revenue_to_four_places() -> None:
    assert share(Decimal("1"), Decimal("3")) == Decimal("0.3333")
    assert share(Decimal("2"), Decimal("3")) == Decimal("0.6667")
    assert share(Decimal("0.30"), Decimal("1")) == Decimal("0.3000")
    assert share(Decimal("5"), Decimal("2")) == Decimal("2.5000")


def test_share_of_no_or_zero_revenue_is_unknown() -> None:
    assert share(Decimal("1"), None) is None
    assert share(Decimal("1"), Decimal(0)) is None


def test_tenant_margin_is_revenue_minus_cost() -> None:
    t = tm("a", "1.00", "0.30")
    assert t.gross_margin_usd == Decimal("0.70")
    assert t.cost_share == Decimal("0.3000")
    assert t.margin_pct == Decimal("70.00")


def test_a_tenant_costing_more_than_it_pays_has_a_negative_margin() -> None:
    t = tm("a", "2", "3")
    assert t.gross_margin_usd == Decimal("-1")
    assert t.cost_share == Decimal("1.5000")
    assert t.margin_pct == Decimal("-50.00")


def test_a_tenant_with_unknown_revenue_has_no_margin() -> None:
    t = tm("a", None, "0.5")
    assert t.gross_margin_usd is None and t.cost_share is None and t.margin_pct is None
    assert t.direction == "new"


@pytest.mark.parametrize(
    ("now_cost", "earlier", "direction"),
    [
        ("0.30", ["0.20"], "worse"),
        ("0.20", ["0.30"], "better"),
        ("0.30", ["0.29"], "flat"),  # within 5%
        ("0.30", [None, "0.10"], "worse"),  # the nearest month with a share counts
        ("0.30", [None], "new"),
        ("0.30", [], "new"),
    ],
)
def test_direction_compares_with_the_nearest_earlier_month(
    now_cost: str, earlier: list[str | None], direction: str
) -> None:
    assert tm("a", "1", now_cost, earlier).direction == direction


def test_tenants_sort_worst_first() -> None:
    rows = [
        tm("fine", "10", "1"),  # 10%
        tm("idle", None, "0"),  # no revenue, no cost: last
        tm("unpaid-small", None, "0.1"),  # cost and no revenue: first, dearest first
        tm("bad", "1", "0.9"),  # 90%
        tm("unpaid-big", None, "2"),
        tm("middling", "4", "2"),  # 50%
    ]
    order = [t.tenant for t in sorted(rows, key=TenantMargin.sort_key)]
    assert order == ["unpaid-big", "unpaid-small", "bad", "middling", "fine", "idle"]


def test_margin_json_gives_money_as_the_ledger_keeps_it_and_rounds_only_shares() -> None:
    t = tm("a", "1", "0.3000004", ["0.25"])
    t.features = []
    j = t.as_json()
    assert j["revenue_usd"] == "1.000000000000"
    assert j["llm_cost_usd"] == "0.300000400000"
    assert j["gross_margin_usd"] == "0.699999600000"
    assert j["cost_share"] == "0.3000"
    assert j["margin_pct"] == "70.00"
    assert j["direction"] == "worse"
    assert j["trend"] == [{"period": "2024-04", "cost_share": "0.2500"}]


# --- the revenue book ----------------------------------------------------------------------------


def book() -> RevenueBook:
    return RevenueBook(
        Config.model_validate(
            {
                "plans": [{"name": "pro", "monthly_usd": 49}],
                "tenants": [{"name": "acme", "plan": "pro"}, {"name": "globex"}],
                "revenue": [
                    {"tenant": "globex", "period": "2024-05", "amount": 12},
                    {"tenant": "acme", "period": "2024-04", "amount": 60},
                ],
            }
        )
    )


def test_revenue_is_recorded_first_then_configured_then_the_plan_price() -> None:
    b = book()
    assert b.revenue("acme", "2024-05") == (Decimal(49), "plan pro")
    assert b.revenue("acme", "2024-04") == (Decimal(60), "recorded")
    assert b.revenue("globex", "2024-05") == (Decimal(12), "recorded")
    assert b.revenue("globex", "2024-06") == (None, "unknown")
    b.record(RevenueEntry("acme", "2024-05", Decimal("75.5")))
    assert b.revenue("acme", "2024-05") == (Decimal("75.5"), "recorded")
    b.replace_recorded([RevenueEntry("initech", "2024-05", Decimal(1))])
    assert b.revenue("acme", "2024-05") == (Decimal(49), "plan pro")
    assert b.tenants() == {"acme", "globex", "initech"}


# --- margins over a real ledger ------------------------------------------------------------------


def record(rid: str, tenant: str, feature: str | None, cost: str, at: datetime) -> UsageRecord:
    return UsageRecord(
        request_id=rid,
        attempt=1,
        ts=at.timestamp(),
        tenant=tenant,
        key_id="key_x",
        feature=feature,
        end_user=None,
        endpoint="chat.completions",
        model="m",
        provider="p",
        upstream_model="m",
        input_tokens=1,
        output_tokens=1,
        cached_tokens=0,
        usage_reported=True,
        cost_usd=Decimal(cost),
        price_version=None,
        latency_ms=1.0,
        ttft_ms=None,
        status="ok",
        error_code=None,
        stream=False,
    )


async def test_margins_report_per_feature_with_the_trend_of_earlier_months(tmp_path: Path) -> None:
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    await ledger.start()
    may, april = datetime(2024, 5, 20, tzinfo=UTC), datetime(2024, 4, 30, 23, tzinfo=UTC)
    try:
        for r in [
            record("1", "acme", "chat", "3", may),
            record("2", "acme", "summarize", "7", may),
            record("3", "acme", "chat", "2", may),
            record("4", "acme", None, "30", april),
            record("5", "globex", "chat", "6", may),
            record("6", "initech", "chat", "1", datetime(2024, 6, 1, tzinfo=UTC)),  # June
        ]:
            await ledger.record(r)
        rows = await margins(ledger, book(), "2024-05")
    finally:
        await ledger.close()
    assert [t.tenant for t in rows] == ["globex", "acme"]  # 50% before 24.49%
    globex, acme = rows
    assert globex.cost_usd == Decimal(6) and globex.cost_share == Decimal("0.5000")
    assert acme.requests == 3 and acme.cost_usd == Decimal(12)
    assert acme.revenue_usd == Decimal(49) and acme.revenue_source == "plan pro"
    assert acme.gross_margin_usd == Decimal(37)
    assert [(f.feature, f.requests, f.cost_usd, f.share_of_revenue) for f in acme.features] == [
        ("summarize", 1, Decimal(7), Decimal("0.1429")),
        ("chat", 2, Decimal(5), Decimal("0.1020")),
    ]
    # April: $30 against the $60 recorded; March: no usage at all
    assert acme.trend == [("2024-04", Decimal("0.5000")), ("2024-03", None)]
    assert acme.direction == "better"
    assert globex.trend == [("2024-04", None), ("2024-03", None)]


# --- billing CSVs --------------------------------------------------------------------------------


def test_a_billing_csv_becomes_revenue_entries() -> None:
    text = "tenant, period ,amount,currency\nacme,2024-05,49.00,usd\n globex ,2024-12,0,\n"
    assert parse_revenue_csv(text, "billing.csv") == [
        RevenueEntry("acme", "2024-05", Decimal("49.00"), "USD", "billing.csv"),
        RevenueEntry("globex", "2024-12", Decimal(0), "USD", "billing.csv"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenant,amount\nacme,1\n", "billing.csv: the header must name the columns tenant, period"),
        ("", "billing.csv: the header must name"),
        ("tenant,period,amount\nacme,2024-05,1\n,2024-05,1\n", "billing.csv:3: tenant is empty"),
        (
            "tenant,period,amount\nacme,2024-13,1\n",
            "billing.csv:2: period must be YYYY-MM, got '2024-13'",
        ),
        ("tenant,period,amount\nacme,May 2024,1\n", "billing.csv:2: period must be YYYY-MM"),
        ("tenant,period,amount\nacme,2024-05,ten\n", "billing.csv:2: amount is not a number"),
        ("tenant,period,amount\nacme,2024-05,\n", "billing.csv:2: amount is not a number"),
        ("tenant,period,amount\nacme,2024-05,-1\n", "billing.csv:2: amount must be a non-negative"),
        (
            "tenant,period,amount\nacme,2024-05,NaN\n",
            "billing.csv:2: amount must be a non-negative",
        ),
        (
            "tenant,period,amount\nacme,2024-05,Infinity\n",
            "billing.csv:2: amount must be a non-negative",
        ),
        (
            "tenant,period,amount,currency\nacme,2024-05,1,EUR\n",
            "billing.csv:2: only USD is supported, got EUR",
        ),
    ],
)
def test_a_bad_billing_csv_names_the_file_line_and_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        parse_revenue_csv(text, "billing.csv")
    assert exc.value.message.startswith(message), exc.value.message


def test_a_bad_row_is_named_by_its_line_in_the_file() -> None:
    # a blank line and a quoted newline before it: the line number is the file's, not the row's
    # (the newline is in a quoted amount: a tenant name may not hold one)
    text = 'tenant,period,amount\nacme,2024-05,1\n\nglobex,2024-05,"2\n"\ninitech,2024-5,3\n'
    with pytest.raises(InvalidRequestError) as exc:
        parse_revenue_csv(text, "billing.csv")
    assert exc.value.message == "billing.csv:6: period must be YYYY-MM, got '2024-5'"
