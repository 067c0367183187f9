"""Outcomes kept for training the router: feedback on served calls, and captured prompts.

``POST /v1/feedback`` records a score (0..1) and an optional label against a call the tenant made
(``feedback``, one row per call, the last word kept). Where prompt capture is on for the tenant
or feature (``prompt_capture:``, opt-in), the text the router reads of each served call is kept
(``prompts``). ``passerelle router train --from-ledger`` joins the two with the call's ledger
row: the model that served it (the route's choice, else the model asked for), its cost, and the
score, one outcome per call. Both tables live beside the usage table, created by the same
migration, and are written and read through the two primitives each store already has.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from passerelle.store.records import Status, from_pico, storable

OUTCOME_SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS feedback (
        request_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        label TEXT,
        ts DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS prompts (
        request_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        feature TEXT,
        prompt TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL
    )
    """,
]


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    """One call with feedback and a captured prompt: a training row."""

    request_id: str
    tenant: str
    prompt: str
    model: str
    score: float
    cost_usd: Decimal | None
    label: str | None


def _marks(placeholder: str, n: int) -> str:
    if "{i}" not in placeholder:
        return ", ".join([placeholder] * n)
    return ", ".join(placeholder.format(i=i + 1) for i in range(n))


class OutcomeQueries:
    """What a ledger adds for outcomes; it supplies ``placeholder`` and the two primitives."""

    placeholder = "?"

    async def _read_rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def _write_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def record_feedback(
        self, request_id: str, tenant: str, score: float, label: str | None
    ) -> None:
        sql = (
            f"INSERT INTO feedback (request_id, tenant, score, label, ts) "
            f"VALUES ({_marks(self.placeholder, 5)}) ON CONFLICT (request_id) DO UPDATE SET "
            "score = excluded.score, label = excluded.label, ts = excluded.ts"
        )
        await self._write_rows(sql, [(request_id, tenant, score, storable(label), time.time())])

    async def capture_prompt(
        self, request_id: str, tenant: str, feature: str | None, prompt: str
    ) -> None:
        sql = (
            f"INSERT INTO prompts (request_id, tenant, feature, prompt, ts) "
            f"VALUES ({_marks(self.placeholder, 5)}) ON CONFLICT (request_id) DO NOTHING"
        )
        row = (request_id, tenant, storable(feature), storable(prompt), time.time())
        await self._write_rows(sql, [row])

    async def outcomes(self, tenant: str | None = None) -> list[LedgerOutcome]:
        """Every call with both a score and a prompt (of one tenant, or all), oldest first."""
        where = f" AND f.tenant = {_marks(self.placeholder, 1)}" if tenant is not None else ""
        sql = (
            "SELECT f.request_id, f.tenant, p.prompt, COALESCE(u.routed_to, u.model), f.score, "
            "u.cost_pusd, f.label FROM feedback f "
            "JOIN prompts p ON p.request_id = f.request_id "
            f"JOIN usage u ON u.request_id = f.request_id AND u.status = '{Status.OK}'"
            f"{where} ORDER BY f.ts"
        )
        rows = await self._read_rows(sql, () if tenant is None else (tenant,))
        return [
            LedgerOutcome(
                request_id=r[0],
                tenant=r[1],
                prompt=r[2],
                model=r[3],
                score=float(r[4]),
                cost_usd=None if r[5] is None else from_pico(int(r[5])),
                label=r[6],
            )
            for r in rows
            if r[3] is not None
        ]
