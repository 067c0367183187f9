"""The ledger's schema brought up to date at start-up, on SQLite and PostgreSQL alike.

``sql.SCHEMA`` creates what is missing (``CREATE ... IF NOT EXISTS``), with every column of the
current release. A ledger made by an earlier release has its usage table already, without the
columns added since: ``ADDED_COLUMNS`` lists them in order, and each missing one is added
(``ALTER TABLE ... ADD COLUMN``), its old rows taking the column's default. A new column goes both
in the CREATE TABLE and here. Replicas starting together migrate once: SQLite under
``BEGIN IMMEDIATE``, PostgreSQL inside the caller's transaction, which holds an advisory lock.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from passerelle.store.outcomes import OUTCOME_SCHEMA
from passerelle.store.sql import SCHEMA

ADDED_COLUMNS = (
    ("saved_pusd", "BIGINT NOT NULL DEFAULT 0"),  # the savings report (store/savings.py)
    ("saving_source", "TEXT"),
    ("cache", "TEXT"),
    ("routed_to", "TEXT"),  # routing: the model a route chose, why, what it saved
    ("route_reason", "TEXT"),
    ("route_saved_pusd", "BIGINT"),
)


def add_column_sql(column: str, definition: str) -> str:
    return f"ALTER TABLE usage ADD COLUMN {column} {definition}"


def migrate_sqlite(conn: sqlite3.Connection) -> None:
    """On an autocommit connection: the schema and the missing columns in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in [*SCHEMA, *OUTCOME_SCHEMA]:
            conn.execute(stmt)
        have = {row[1] for row in conn.execute("PRAGMA table_info(usage)")}
        for column, definition in ADDED_COLUMNS:
            if column not in have:
                conn.execute(add_column_sql(column, definition))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


async def migrate_postgres(conn: Any) -> None:
    """On an asyncpg connection, inside the caller's transaction. A column already there costs
    no ALTER (nor the table lock one takes)."""
    for stmt in [*SCHEMA, *OUTCOME_SCHEMA]:
        await conn.execute(stmt)
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'usage'"
    )
    have = {r[0] for r in rows}
    for column, definition in ADDED_COLUMNS:
        if column not in have:
            await conn.execute(add_column_sql(column, definition))
