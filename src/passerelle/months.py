"""The month, ``YYYY-MM``: one definition for every place a month comes in or is written.

Revenue is recorded per month, margins are reported per month and monthly budgets reset on the
first of the month (UTC). The configuration, the admin API and its OpenAPI description, the
billing import and the CLI all accept a month through ``MONTH_PATTERN`` (1970-01 to 2999-12, so
``2024-13`` and ``0000-01`` are refused), and every month the gateway writes comes from
``month_of``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from passerelle.errors import InvalidRequestError

MONTH_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])$"
FIRST_MONTH = "1970-01"
LAST_MONTH = "2999-12"
_MONTH_RE = re.compile(MONTH_PATTERN)
_MONTH_SHAPE = re.compile(r"\d{4}-\d{2}")


def is_month(text: str) -> bool:
    return _MONTH_RE.fullmatch(text) is not None


def check_month(text: str, where: str = "") -> str:
    """``text`` if it is a month; else the client's error, naming the ``period`` parameter."""
    if is_month(text):
        return text
    shown = text if len(text) <= 20 else text[:20] + "..."
    hint = f" (a month from {FIRST_MONTH} to {LAST_MONTH})" if _MONTH_SHAPE.fullmatch(text) else ""
    raise InvalidRequestError(f"{where}period must be YYYY-MM, got {shown!r}{hint}", param="period")


def month_of(moment: datetime) -> str:
    """The month ``moment`` falls in, as it is written everywhere (``moment`` in UTC)."""
    return moment.strftime("%Y-%m")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """The first instant of the month and of the next one, in UTC (``month`` already checked)."""
    year, number = (int(x) for x in month.split("-"))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def previous_month(month: str) -> str:
    year, number = (int(x) for x in month.split("-"))
    return f"{year - (number == 1)}-{(number - 2) % 12 + 1:02d}"
