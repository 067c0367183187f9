"""Start-up recovery: the calls a dead process left in flight, recorded and settled.

A process killed mid-call leaves, in its journal (``store/journal.py``), calls that never ended.
The next start takes over every journal whose process is dead and, per call:

- one that went upstream (or was about to) and whose row never reached the ledger is recorded as
  ``interrupted``: charged at the worst case its reservation held (the upstream may have produced
  up to that, and a budget must never count less than was possibly spent), usage not reported; a
  call that reserved nothing (no budget applied) is recorded unpriced (cost NULL), as unknown
  rather than $0;
- its reservation is settled to that cost, to the recorded cost if the row was committed but the
  settlement was not, or to 0 if the call never went upstream (killed between its reservation
  and dispatch), so no hold waits for its expiry.

Rows are written before the counters are seeded and settled after, so both kinds of counters end
up counting each call once: the in-process counters of a restarted single process are rebuilt from
the ledger (a reservation of a dead process holds nothing in them), the shared ones in Redis move
the dead replica's hold into ``spent``. With PostgreSQL, each replica reconciles its own journal
when it restarts (or any replica on the same host and data directory).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal

from passerelle.errors import StoreError
from passerelle.limits.counters import Admission, Counters, Reservation
from passerelle.limits.rules import Limits, from_nano, to_nano
from passerelle.store.base import Ledger
from passerelle.store.journal import OpenCall
from passerelle.store.records import Status, UsageRecord

log = logging.getLogger("passerelle")

RECOVER_AT_ONCE = 256
CHARGED = "interrupted: in flight when its process died; charged at its reserved worst case"
UNPRICED = "interrupted: in flight when its process died; nothing was reserved, cost unknown"


@dataclass(slots=True)
class Recovered:
    call: OpenCall
    actual_nano: int  # what its reservation settles to
    interrupted: bool  # recorded now, as interrupted (else its row was committed before)


def interrupted_record(f: OpenCall) -> UsageRecord:
    return UsageRecord(
        request_id=f.request_id,
        attempt=0,  # attempts count from 1: this row never collides with a real attempt's
        ts=f.at,
        tenant=f.tenant,
        key_id=f.key_id,
        feature=f.feature,
        end_user=f.end_user,
        endpoint=f.endpoint,
        model=f.model,
        provider=None,
        upstream_model=None,
        input_tokens=0,
        output_tokens=0,
        cached_tokens=0,
        usage_reported=False,
        cost_usd=None if f.amount_nano is None else from_nano(f.amount_nano),
        price_version=None,
        latency_ms=0.0,
        ttft_ms=None,
        status=Status.INTERRUPTED,
        error_code="process_died",
        stream=f.stream,
        decision=UNPRICED if f.amount_nano is None else CHARGED,
    )


async def record_interrupted(ledger: Ledger, found: list[OpenCall]) -> list[Recovered]:
    """Rows for the calls that have none; what each reservation settles to."""

    async def one(f: OpenCall) -> Recovered:
        if not f.begun:  # reserved, never dispatched: nothing was spent
            return Recovered(f, 0, interrupted=False)
        rows = [r for r in await ledger.records(f.request_id) if r.status != Status.ATTEMPT_FAILED]
        if rows:  # committed before the crash: only the settlement may be missing
            cost = sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0))
            return Recovered(f, to_nano(cost, up=True), interrupted=False)
        await ledger.record(interrupted_record(f))
        return Recovered(f, f.amount_nano or 0, interrupted=True)

    out: list[Recovered] = []
    for i in range(0, len(found), RECOVER_AT_ONCE):  # the rows of a chunk commit together
        out.extend(await asyncio.gather(*(one(f) for f in found[i : i + RECOVER_AT_ONCE])))
    return out


async def settle_interrupted(counters: Counters, limits: Limits, recovered: list[Recovered]) -> int:
    """Settle the dead process's reservations; returns how many were settled."""
    settled = 0
    for r in recovered:
        f = r.call
        if f.amount_nano is None:
            continue
        by_counter = {rule.counter(f.at): rule for rule in limits.all_budgets()}
        rules = [by_counter[c] for c in f.budgets if c in by_counter]
        admission = Admission(
            reservation_id=f.request_id,
            at=f.at,
            amount_nano=f.amount_nano,
            budgets=rules,
            rates=[],  # a rate window is a minute long: it has moved on
            tokens=f.tokens,
        )
        try:
            await counters.settle(Reservation(admission), r.actual_nano, 0)
        except StoreError as exc:
            log.error("%s: settling its reservation failed (%s); it expires", f.request_id, exc)
            continue
        settled += 1
    return settled


def report(recovered: list[Recovered], settled: int) -> None:
    interrupted = [r for r in recovered if r.interrupted]
    charged = sum((from_nano(r.actual_nano) for r in interrupted), Decimal(0))
    log.warning(
        "recovered %d call(s) left in flight by a dead process: %d recorded as interrupted "
        "(charged $%s at their worst case), %d reservation(s) settled",
        len(recovered),
        len(interrupted),
        charged,
        settled,
    )
