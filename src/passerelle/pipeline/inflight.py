"""In flight: a call about to go upstream is written to the journal, so a crash cannot hide it.

The stage sits right before dispatch: a call that reaches it will cost money upstream. It appends
the call's ``begin`` line (who, what, the worst case its reservation holds) and, once the answer
is complete, its ``end`` line, after the meter's row and the budget's settlement (deferred work
runs in registration order, and this stage registers last). The meter notes in between that the
row is committed. A call the process dies with is found by the next start (``Gateway.reconcile``).
"""

from __future__ import annotations

from passerelle.pipeline.chain import Next
from passerelle.pipeline.context import Call
from passerelle.store.journal import Journal


def begin_entry(call: Call) -> dict[str, object]:
    entry: dict[str, object] = {
        "id": call.request_id,
        "at": call.received_at,
        "tenant": call.tenant,
        "key": call.key.key_id if call.key else None,
        "feature": call.feature,
        "user": call.user,
        "endpoint": call.endpoint,
        "model": call.model,
        "stream": call.stream,
    }
    reservation = call.reservation
    if reservation is not None:
        admission = reservation.admission
        entry["amount"] = admission.amount_nano
        entry["tokens"] = admission.tokens
        entry["budgets"] = [rule.counter(admission.at) for rule in admission.budgets]
    return entry


class InFlight:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def __call__(self, call: Call, next: Next) -> None:
        self._journal.begin(begin_entry(call))
        call.defer(self._end)
        await next(call)

    async def _end(self, call: Call) -> None:
        self._journal.end(call.request_id)
