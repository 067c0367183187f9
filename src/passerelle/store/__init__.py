"""The ledger and state stores: SQLite (embedded default), PostgreSQL (scale-out), Redis."""
