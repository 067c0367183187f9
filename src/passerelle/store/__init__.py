"""The ledger and state stores: SQLite (embedded default) and PostgreSQL (scale-out)."""

from passerelle.store.base import Ledger, open_ledger

__all__ = ["Ledger", "open_ledger"]
