"""The audit trail: one keyed, chained record for every outbound attempt.

An attempt observer (``pipeline/attempts.py``): when an attempt ends, it writes down where the
call's data went and why: the time, tenant, feature, data class, the provider, its upstream
model and jurisdiction, the outcome, the targets the call's filters removed and the reason for
each, the types and counts of the personal data pseudonymised (never the values), and the end
user as a keyed pseudonym only. The record is chained at once, in memory, in this process's
chain (``sovereignty/audit.py``), and queued; a writer task stores the queue in batches every
``flush_every_s``, so a request never waits on the database. Each record also goes to this
process's spool file as it is chained (``store/audit_spool.py``), so a process killed before a
batch loses none: the next start stores the dead process's records. The writer also signs the
chain's head every ``checkpoint_every_s`` and at shutdown. While the store is unreachable, records
wait in memory (up to ``MAX_PENDING``, then the oldest are dropped from memory and counted in the
log; they stay in the spool, which is kept at shutdown for the next start to store), and are
written when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Any

from passerelle.pipeline.attempts import Attempt, AttemptObserver
from passerelle.pipeline.context import Call
from passerelle.sovereignty.audit import Chain, pseudonym
from passerelle.store.audit import AuditRecord, AuditStore
from passerelle.store.audit_spool import AuditSpool

log = logging.getLogger("passerelle.audit")
MAX_PENDING = 100_000


def chain_name() -> str:
    """A new chain's name: when it started, and a random part so that replicas never share one."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:12]


class AuditTrail(AttemptObserver):
    def __init__(
        self,
        store: AuditStore,
        key: bytes,
        *,
        spool: AuditSpool | None = None,
        flush_every_s: float = 0.2,
        checkpoint_every_s: float = 300.0,
    ) -> None:
        self.store = store
        self._spool = spool
        self._key = key
        self._chain = Chain(key, chain_name())
        self._pending: deque[AuditRecord] = deque()
        self._flush_every_s = flush_every_s
        self._checkpoint_every_s = checkpoint_every_s
        self._writer: asyncio.Task[None] | None = None
        self._dropped = 0
        self._spool_whole = True  # every record not in the store is still in memory

    @property
    def chain(self) -> str:
        return self._chain.name

    async def start(self) -> None:
        await self.store.start()
        if self._spool is not None:
            left = self._spool.take_over()
            if left:  # a dead process's records, in their chains: stored before they are witnessed
                await self.store.restore(left)
                log.warning(
                    "audit: %d records of a stopped process stored from its spool", len(left)
                )
            self._spool.forget_taken()
            self._spool.open()
        # the first record witnesses the chains already kept: cutting one breaks this one
        witness = {c: [seq, head] for c, seq, head in await self.store.heads()}
        self._add({"event": "chain_started", "witness": witness}, time.time())
        self._writer = asyncio.create_task(self._write(), name="audit-writer")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._flush()
        if not self._pending:
            await self._checkpoint()
        if self._spool is not None:
            self._spool.close(all_stored=not self._pending and self._spool_whole)
        await self.store.close()

    def ended(self, call: Call, attempt: Attempt) -> None:
        removed = [[reason, list(labels)] for reason, labels in call.eligible.removed]
        body: dict[str, Any] = {
            "event": "attempt",
            "request_id": call.request_id,
            "attempt": attempt.n,
            "tenant": call.tenant,
            "feature": call.feature,
            "user": pseudonym(self._key, call.user) if call.user else None,
            "data_class": call.data_class.name if call.data_class else None,
            "model": call.route.model if call.route else call.model,
            "provider": attempt.provider,
            "upstream_model": attempt.upstream_model,
            "jurisdiction": attempt.jurisdiction,
            "outcome": attempt.outcome,
            "rejected": removed,
            "pseudonymised": dict(call.pseudonymised),
        }
        self._add(body, time.time())

    def _add(self, body: dict[str, Any], ts: float) -> None:
        record = self._chain.append(body, ts)
        self._pending.append(record)
        if self._spool is not None:
            self._spool.add(record)
        if len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self._dropped += 1
            self._spool_whole = False  # the spool alone has it now: never empty it

    async def _write(self) -> None:
        last_checkpoint = time.monotonic()
        while True:
            await asyncio.sleep(self._flush_every_s)
            await self._flush()
            if time.monotonic() - last_checkpoint >= self._checkpoint_every_s and not self._pending:
                await self._checkpoint()
                last_checkpoint = time.monotonic()

    async def _flush(self) -> None:
        if self._dropped:
            log.error("audit store unreachable too long: %d records dropped", self._dropped)
            self._dropped = 0
        while self._pending:
            batch = list(self._pending)
            try:
                await self.store.append(batch)
            except Exception as exc:  # kept, retried at the next flush
                log.warning("audit records not written yet (%s): %d waiting", exc, len(batch))
                return
            for _ in batch:
                self._pending.popleft()
        if self._spool is not None and self._spool_whole:
            self._spool.stored()

    async def _checkpoint(self) -> None:
        try:
            await self.store.add_checkpoint(self._chain.checkpoint(time.time()))
        except Exception as exc:
            log.warning("audit checkpoint not written (%s)", exc)
