"""Opening the ledger a store URL names: SQLite (embedded) or PostgreSQL (shared by replicas).

It sits above the implementations, which depend only on the protocol in ``base.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from passerelle.store.base import Ledger
from passerelle.store.postgres import PostgresLedger
from passerelle.store.sqlite import SQLiteLedger


def open_ledger(
    url: str, *, dead_letters: Path | None = None, unreachable_after_s: float | None = None
) -> Ledger:
    """The ledger ``url`` names. ``dead_letters``: the file rows the store refuses are kept in;
    ``unreachable_after_s``: how long writes retry a lost store before their callers fail."""
    kw: dict[str, Any] = {"dead_letters": dead_letters}
    if unreachable_after_s is not None:
        kw["unreachable_after_s"] = unreachable_after_s
    if url.startswith("sqlite:///"):
        return SQLiteLedger(url.removeprefix("sqlite:///"), **kw)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(url, **kw)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]}")
