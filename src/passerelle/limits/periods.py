"""Budget periods (UTC): which period a moment falls in, and when it resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

from passerelle.months import month_of

FAR = 10 * 365 * 86400


def period_id(period: str, at: float) -> str:
    # periods change on whole seconds: one computation per second and period is enough
    return _period_id(period, int(at))


@lru_cache(maxsize=64)
def _period_id(period: str, at: int) -> str:
    d = datetime.fromtimestamp(at, UTC)
    if period == "day":
        return d.strftime("%Y-%m-%d")
    if period == "month":
        return month_of(d)
    return "total"


def period_start(period: str, at: float) -> datetime | None:
    d = datetime.fromtimestamp(at, UTC)
    if period == "day":
        return d.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


def period_end(period: str, at: float) -> datetime | None:
    start = period_start(period, at)
    if start is None:
        return None
    if period == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def seconds_left(period: str, at: float) -> int:
    end = period_end(period, at)
    return FAR if end is None else max(1, int(end.timestamp() - at))
