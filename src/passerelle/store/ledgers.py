"""Opening the ledger a store URL names: SQLite (embedded) or PostgreSQL (shared by replicas).

It sits above the implementations, which depend only on the protocol in ``base.py``.
"""

from __future__ import annotations

from passerelle.store.base import Ledger
from passerelle.store.postgres import PostgresLedger
from passerelle.store.sqlite import SQLiteLedger


def open_ledger(url: str) -> Ledger:
    if url.startswith("sqlite:///"):
        return SQLiteLedger(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(url)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]}")
