"""How a usage report is asked for: the group-by columns and the time window.

The admin API (``GET /admin/usage``) and ``passerelle usage`` take the same parameters, parsed
here the same way, so the command line never imports an HTTP handler module. Errors are
``InvalidRequestError`` naming the parameter; the CLI shows their message as a usage error.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from passerelle.errors import InvalidRequestError
from passerelle.store.records import GROUP_COLUMNS

RELATIVE = re.compile(r"(\d{1,6})([hdm])")
MAX_WHEN = 40  # characters of an ISO time with its offset
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)


def parse_when(value: str | None, param: str) -> datetime | None:
    """An ISO date or time, or a span back from now (``24h``, ``7d``, ``30m``), within 1970-2999;
    anything longer or stranger is a 400 naming ``param``, never an overflow."""
    if not value:
        return None
    shape = InvalidRequestError(
        f"{param} must be an ISO date or time, or a span like 24h or 7d (at most 6 digits)",
        param=param,
    )
    if len(value) > MAX_WHEN:
        raise shape
    m = RELATIVE.fullmatch(value)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "m": timedelta(minutes=n)}[unit]
        when = datetime.now(UTC) - delta
    else:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise shape from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if not EARLIEST <= when < LATEST:
        raise InvalidRequestError(f"{param} must be between 1970 and 2999", param=param)
    return when


def parse_group_by(value: str | None) -> list[str]:
    if not value:
        return []
    groups = [g.strip() for g in value.split(",") if g.strip()]
    for g in groups:
        if g not in GROUP_COLUMNS:
            raise InvalidRequestError(
                f"group_by accepts {', '.join(GROUP_COLUMNS)}; got {g!r}", param="group_by"
            )
    return groups
