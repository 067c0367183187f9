"""The month (``YYYY-MM``): one definition, the same everywhere a month comes in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from passerelle.cli.main import cli
from passerelle.config.schema import Config
from passerelle.errors import InvalidRequestError
from passerelle.limits.periods import period_id
from passerelle.months import MONTH_PATTERN, check_month, month_bounds, month_of, previous_month
from passerelle.server.openapi import openapi_document

NOT_MONTHS = ["2024-13", "0000-01", "2024-00", "2024-1", "24-01", "2024-01\n", "3000-01", ""]


@pytest.mark.parametrize("month", ["1970-01", "2024-12", "2999-12"])
def test_a_month_from_1970_to_2999_is_accepted(month: str) -> None:
    assert check_month(month) == month


@pytest.mark.parametrize("text", NOT_MONTHS)
def test_anything_else_is_refused_naming_the_period(text: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_month(text)
    assert caught.value.param == "period"
    assert "YYYY-MM" in caught.value.message


@pytest.mark.parametrize("text", NOT_MONTHS)
def test_the_configuration_refuses_a_revenue_month_that_does_not_exist(text: str) -> None:
    with pytest.raises(ValidationError, match="period"):
        Config.model_validate(
            {
                "tenants": [{"name": "acme"}],
                "revenue": [{"tenant": "acme", "period": text, "amount": 1}],
            }
        )


def test_the_schema_and_the_openapi_description_publish_the_same_pattern() -> None:
    schema = Config.model_json_schema()
    assert schema["$defs"]["RevenueConfig"]["properties"]["period"]["pattern"] == MONTH_PATTERN
    document = openapi_document()
    revenue = document["components"]["schemas"]["RevenueEntry"]["properties"]["period"]
    assert revenue["pattern"] == MONTH_PATTERN
    margins = document["paths"]["/admin/margins"]["get"]["parameters"]
    assert [p["schema"]["pattern"] for p in margins if p["name"] == "period"] == [MONTH_PATTERN]


def test_a_budget_month_and_the_ledger_month_are_written_alike() -> None:
    at = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    assert period_id("month", at.timestamp()) == month_of(at) == "2024-02"
    assert check_month(month_of(at)) == "2024-02"


def test_bounds_and_the_month_before_cross_the_year() -> None:
    assert month_bounds("2024-12") == (
        datetime(2024, 12, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert previous_month("2024-01") == "2023-12"


@pytest.mark.parametrize("text", ["2024-13", "0000-01"])
def test_the_margins_command_refuses_a_month_that_does_not_exist(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, ["margins", "--period", text])
    assert out.exit_code == 2, out.output
    assert "YYYY-MM" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)
