"""The ``Ledger`` protocol, and opening the one the configuration names.

A ledger records usage durably (``record`` returns once the row is committed, in a batch with its
neighbours), answers usage reports, and keeps the API keys created at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from passerelle.economics.revenue import RevenueEntry
from passerelle.store.records import UsageRecord, UsageRow
from passerelle.tenancy import ApiKey


class Ledger(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def record(self, record: UsageRecord) -> None: ...

    async def usage(
        self,
        group_by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]: ...

    async def create_key(self, key: ApiKey) -> None: ...

    async def find_key(self, digest: str) -> ApiKey | None: ...

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]: ...

    async def records(self, request_id: str) -> list[UsageRecord]: ...

    async def set_revenue(self, entries: Sequence[RevenueEntry]) -> None: ...

    async def list_revenue(self) -> list[RevenueEntry]: ...


def open_ledger(
    url: str, *, dead_letters: Path | None = None, unreachable_after_s: float | None = None
) -> Ledger:
    """The ledger ``url`` names. ``dead_letters``: the file rows the store refuses are kept in;
    ``unreachable_after_s``: how long writes retry a lost store before their callers fail."""
    kw: dict[str, Any] = {"dead_letters": dead_letters}
    if unreachable_after_s is not None:
        kw["unreachable_after_s"] = unreachable_after_s
    if url.startswith("sqlite:///"):
        from passerelle.store.sqlite import SQLiteLedger

        return SQLiteLedger(url.removeprefix("sqlite:///"), **kw)
    if url.startswith(("postgresql://", "postgres://")):
        from passerelle.store.postgres import PostgresLedger

        return PostgresLedger(url, **kw)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]}")
