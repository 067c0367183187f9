"""In flight: what a call holds and where it went, journaled so that a crash cannot hide it.

Two places write a call's journal lines (``store/journal.py``). ``JournaledCounters`` wraps the
budget counters: before a reservation is made, its ``reserve`` line (the worst case and the
counters it is held on), so that a process killed the instant after Redis took the hold still
leaves what is needed to release it; a refused admission ends the call at once. The ``InFlight``
stage sits right before dispatch, where a call is about to cost money upstream: its ``begin``
line (who and what). The meter marks the row committed, and the settlement, or the stage's
deferred work for a call with no reservation, ends it: deferred work runs in registration order
(meter, budget, then this stage), so the end comes after the row and the settlement. A call a
process dies with is found by the next start (``recovery.py``).
"""

from __future__ import annotations

from passerelle.limits.counters import Admission, Counters, Refusal, Reservation, Seed
from passerelle.limits.rules import BudgetRule
from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.store.journal import Journal


def begin_entry(call: Call) -> dict[str, object]:
    return {
        "at": call.received_at,
        "tenant": call.tenant,
        "key": call.key.key_id if call.key else None,
        "feature": call.feature,
        "user": call.user,
        "endpoint": call.endpoint,
        "model": call.model,
        "stream": call.stream,
    }


class InFlight:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def __call__(self, call: Call, next: Next) -> None:
        self._journal.begin(call.request_id, begin_entry(call))
        call.defer(self._end)
        await next(call)

    async def _end(self, call: Call) -> None:
        self._journal.end(call.request_id)


class JournaledCounters:
    """``Counters`` whose reservations are journaled before they are made and ended once they
    are settled or refused; everything else is the wrapped counters'."""

    def __init__(self, inner: Counters, journal: Journal) -> None:
        self.inner = inner
        self._journal = journal

    async def start(self, rules: list[BudgetRule], seed: Seed) -> None:
        await self.inner.start(rules, seed)

    async def close(self) -> None:
        await self.inner.close()

    async def admit(self, admission: Admission) -> Reservation | Refusal:
        rid = admission.reservation_id
        if admission.budgets:
            at = admission.at
            self._journal.reserve(
                rid,
                {
                    "at": at,
                    "amount": admission.amount_nano,
                    "tokens": admission.tokens,
                    "budgets": sorted({rule.counter(at) for rule in admission.budgets}),
                },
            )
        try:
            outcome = await self.inner.admit(admission)
        except BaseException:
            # unreachable counters: a hold whose answer was lost expires on its own
            self._journal.end(rid)
            raise
        if isinstance(outcome, Refusal):
            self._journal.end(rid)
        return outcome

    async def settle(self, reservation: Reservation, actual_nano: int, tokens: int) -> None:
        try:
            await self.inner.settle(reservation, actual_nano, tokens)
        finally:
            self._journal.end(reservation.admission.reservation_id)

    async def spent_nano(self, rule: BudgetRule, at: float) -> int:
        return await self.inner.spent_nano(rule, at)
