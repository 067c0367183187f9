"""A usage report's parameters, parsed once for the admin API and the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from passerelle.errors import InvalidRequestError
from passerelle.store.query import parse_group_by, parse_when


def test_group_by_accepts_the_report_columns_and_names_the_bad_one() -> None:
    assert parse_group_by("tenant, model,day") == ["tenant", "model", "day"]
    assert parse_group_by(None) == []
    with pytest.raises(InvalidRequestError) as info:
        parse_group_by("tenant,password")
    assert info.value.param == "group_by" and "'password'" in info.value.message


def test_when_takes_an_iso_time_or_a_span_back_from_now() -> None:
    assert parse_when("2026-03-01", "since") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_when("2026-03-01T12:00:00+01:00", "since") == datetime(2026, 3, 1, 11, tzinfo=UTC)
    before = datetime.now(UTC)
    span = parse_when("24h", "since")
    after = datetime.now(UTC)
    day = timedelta(hours=24)
    assert span is not None and before - day <= span <= after - day
    assert parse_when("", "until") is None
    with pytest.raises(InvalidRequestError) as info:
        parse_when("last tuesday", "until")
    assert info.value.param == "until"
