"""The ``Ledger`` protocol: what every ledger implements (``ledgers.py`` opens one by URL).

A ledger records usage durably (``record`` returns once the row is committed, in a batch with its
neighbours), answers usage and savings reports, and keeps the API keys created at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from passerelle.store.outcomes import LedgerOutcome
from passerelle.store.records import RevenueEntry, UsageRecord, UsageRow
from passerelle.store.savings import SavingsRow
from passerelle.tenancy import ApiKey


class Ledger(Protocol):
    """What every ledger implements. A ledger that subclasses it inherits the defaults of the
    optional capabilities (``healthy``); one that does not must provide them itself."""

    @property
    def healthy(self) -> bool:
        """False while the store is unreachable: the meter then refuses calls (503) rather than
        serve what it could not record. A store that cannot tell is always healthy."""
        return True

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def record(self, record: UsageRecord) -> None: ...

    async def usage(
        self,
        group_by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]: ...

    async def savings(
        self,
        group_by: Sequence[str],
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[SavingsRow]:
        """What calls paid and saved, and their cache hits, grouped (``store/savings.py``)."""
        ...

    async def create_key(self, key: ApiKey) -> None: ...

    async def find_key(self, digest: str) -> ApiKey | None: ...

    async def list_keys(self, tenant: str | None = None) -> list[ApiKey]: ...

    async def records(self, request_id: str) -> list[UsageRecord]: ...

    async def set_revenue(self, entries: Sequence[RevenueEntry]) -> None: ...

    async def list_revenue(self) -> list[RevenueEntry]: ...

    async def record_feedback(
        self, request_id: str, tenant: str, score: float, label: str | None
    ) -> None:
        """A score for a call (``store/outcomes.py``); a second one replaces the first."""
        ...

    async def capture_prompt(
        self, request_id: str, tenant: str, feature: str | None, prompt: str
    ) -> None: ...

    async def outcomes(self, tenant: str | None = None) -> list[LedgerOutcome]: ...
