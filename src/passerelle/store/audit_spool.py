"""The audit records this process has chained and the store does not hold yet.

The audit trail writes to its store in batches, off the request path (``pipeline/audit.py``), so
a process killed between two batches (SIGKILL, the OOM killer) would take the records of its last
attempts with it: calls that reached a provider with no record of where their data went. So each
record is also appended, as it is chained, to this process's spool file in the data directory,
one ``os.write`` per record on an ``O_APPEND`` descriptor, no fsync (the kernel's page cache
outlives the process: only a host crash can lose the tail). Once the store holds every record
added, the file is emptied; at a clean stop it is removed.

At start-up the spools of dead processes are taken over (``store/process_files.py``) and their
records written to the store, each in its own, dead, chain and with the hash it was chained
with, so ``passerelle audit verify`` finds those chains whole. A record the store already holds
is left as the store has it: the spool never overwrites (an edit in the store still shows).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson

from passerelle.store.audit import AuditRecord
from passerelle.store.process_files import create_locked, forget, own_path, take_dead

log = logging.getLogger("passerelle.audit")


def _read(path: Path) -> list[AuditRecord]:
    records = []
    with path.open("rb") as f:
        for line in f:
            try:
                chain, seq, ts, body, digest = orjson.loads(line)
            except (orjson.JSONDecodeError, ValueError, TypeError):
                continue  # a line cut by the crash
            records.append(AuditRecord(str(chain), int(seq), float(ts), str(body), str(digest)))
    return records


class AuditSpool:
    """``take_over`` then ``open`` at start; ``add`` per record, ``stored`` when the store has
    every record added; ``close`` at shutdown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = own_path(directory, "audit")
        self._fd: int | None = None
        self._taken: list[tuple[Path, int]] = []
        self._written = 0  # bytes in the file

    def take_over(self) -> list[AuditRecord]:
        """The records of dead processes' spools; ``forget_taken`` once they are stored."""
        self._taken = take_dead(self.directory, "audit", self.path)
        return [record for path, _ in self._taken for record in _read(path)]

    def forget_taken(self) -> None:
        forget(self._taken)
        self._taken = []

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = create_locked(self.path)

    def add(self, record: AuditRecord) -> None:
        if self._fd is None:
            return
        line = orjson.dumps([record.chain, record.seq, record.ts, record.body, record.hash])
        try:
            self._written += os.write(self._fd, line + b"\n")
        except OSError as exc:  # a full disk must not fail the call; the store may still get it
            log.error("audit spool write failed (%s): a crash now could lose records", exc)

    def stored(self) -> None:
        """The store holds every record added: empty the file."""
        if self._fd is not None and self._written:
            os.ftruncate(self._fd, 0)
            self._written = 0

    def close(self, *, all_stored: bool) -> None:
        """At shutdown: the file goes if the store has everything, else it stays for the next
        start."""
        if self._fd is None:
            return
        if all_stored:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
