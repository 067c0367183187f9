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

RELATIVE = re.compile(r"^(\d+)([hdm])$")


def parse_when(value: str | None, param: str) -> datetime | None:
    if not value:
        return None
    m = RELATIVE.match(value)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        try:
            delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "m": timedelta(minutes=n)}[
                unit
            ]
            return datetime.now(UTC) - delta
        except OverflowError:  # a span reaching before year 1
            raise InvalidRequestError(f"{param} reaches too far back", param=param) from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(
            f"{param} must be an ISO date or time, or a span like 24h or 7d", param=param
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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
