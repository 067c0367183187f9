"""The journal of calls in flight: what a crash would otherwise make invisible.

The hot path never waits on a database, so a process killed mid-call (SIGKILL, the OOM killer, a
container stopped hard) would leave calls the upstream served, or was serving, with no ledger row
and their budget reservations held until they expire. So a call appends a ``reserve`` line before
its budget reservation is made (its worst case and the counters it holds it on), a ``begin`` line
before its first upstream attempt (who and what), and an ``end`` line once it is over: recorded
and settled, or refused, or answered without the upstream. Whether a call left open has its row
is not journaled: the ledger itself is asked at reconciliation (the row is committed before
anything could say so), so a call costs two lines, three with a reservation. An ``end`` line is
not written on its own: it goes with the next line the journal writes (or at compaction or a
clean stop), because losing it costs nothing but work: a call found open whose row the ledger
has is only settled, and settling a hold that is gone changes nothing. Each write is one
``os.write`` on an ``O_APPEND`` descriptor and no fsync: the kernel's page
cache outlives the process, so a process crash loses nothing; only a host crash can lose the tail.
At the next start the calls begun and never ended are reconciled (``Gateway.reconcile``).

One file per process, ``journal-<pid>-<random>.jsonl`` in the data directory, held under an exclusive
``flock`` for the process's life (``store/process_files.py``): a journal whose lock can be taken
belongs to a dead process, so workers sharing one directory never reconcile each other's live calls. The file is compacted
(rewritten with only the calls still open) as it grows, and removed at a clean shutdown.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from passerelle.store.process_files import create_locked, forget, own_path, take_dead

log = logging.getLogger("passerelle.store")

COMPACT_EVERY = 20_000  # lines appended between two compactions


@dataclass(frozen=True, slots=True)
class OpenCall:
    """A call a dead process left open; what reconciliation needs to record and settle it."""

    request_id: str
    at: float
    begun: bool  # it reached the upstream (or was about to): it needs a row
    tenant: str | None = None
    key_id: str | None = None
    feature: str | None = None
    end_user: str | None = None
    endpoint: str = ""
    model: str | None = None
    stream: bool = False
    amount_nano: int | None = None  # the reservation's worst case; None: nothing was reserved
    tokens: int = 0
    budgets: tuple[str, ...] = ()  # the budget counters it holds a reservation on
    source: Path = field(default=Path(), compare=False)


def _read(path: Path) -> list[OpenCall]:
    """The calls left open in one journal; a torn last line is ignored."""
    open_: dict[str, dict[str, Any]] = {}
    with path.open("rb") as f:
        for line in f:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut by the crash: what it announced never happened
            rid = entry.pop("id", None)
            kind = entry.pop("k", None)
            if kind == "e":
                open_.pop(rid, None)
            elif kind in ("v", "b"):
                call = open_.setdefault(rid, {})
                call.update(entry)
                call[kind] = True
    out = []
    for rid, e in open_.items():
        if "at" not in e:
            continue  # nothing but marks of an older format survived: nothing to reconcile
        out.append(
            OpenCall(
                request_id=str(rid),
                at=float(e["at"]),
                begun=bool(e.get("b")),
                tenant=e.get("tenant"),
                key_id=e.get("key"),
                feature=e.get("feature"),
                end_user=e.get("user"),
                endpoint=str(e.get("endpoint", "")),
                model=e.get("model"),
                stream=bool(e.get("stream")),
                amount_nano=e.get("amount"),
                tokens=int(e.get("tokens") or 0),
                budgets=tuple(e.get("budgets") or ()),
                source=path,
            )
        )
    return out


class Journal:
    """This process's journal in ``directory``. ``take_over`` and ``open`` at start, then
    ``reserve``/``begin``/``recorded``/``end`` per call (``recorded`` writes nothing: it lets
    ``end`` close the call); ``close`` at shutdown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = own_path(directory, "journal")
        self._fd: int | None = None
        self._open: dict[str, list[bytes]] = {}  # request id -> its lines (kept by compaction)
        self._begun: set[str] = set()
        self._recorded: set[str] = set()
        self._appended = 0
        self._ends = b""  # ``end`` lines not written yet: they go with the next write
        self._taken: list[tuple[Path, int]] = []

    def take_over(self) -> list[OpenCall]:
        """Lock every journal whose process is dead and return its unfinished calls; ``forget``
        removes them once they are reconciled. Journals of live processes are left alone."""
        self._taken = take_dead(self.directory, "journal", self.path)
        return [call for path, _ in self._taken for call in _read(path)]

    def forget_taken(self) -> None:
        """The dead journals are reconciled: remove them."""
        forget(self._taken)
        self._taken = []

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = create_locked(self.path)

    def close(self) -> None:
        """A clean shutdown: every call has ended; a call still open stays for the next start."""
        if self._fd is None:
            return
        if not self._open:
            self.path.unlink(missing_ok=True)
        elif self._ends:
            self._write(b"")
        os.close(self._fd)
        self._fd = None

    def reserve(self, request_id: str, entry: dict[str, object]) -> None:
        """Before a reservation is made: ``at``, ``amount``, ``tokens``, ``budgets``."""
        self._add(request_id, b"v", entry)

    def begin(self, request_id: str, entry: dict[str, object]) -> None:
        """Before the first upstream attempt: ``at`` and who and what (see ``OpenCall``)."""
        self._begun.add(request_id)
        self._add(request_id, b"b", entry)

    def recorded(self, request_id: str) -> None:
        """The call's row is committed: its ``end`` may close it (in memory only, see above)."""
        if request_id in self._open:
            self._recorded.add(request_id)

    def end(self, request_id: str) -> None:
        """The call is over. One that went upstream and whose row was never committed (the
        ledger failed) stays open: the next start records it as interrupted."""
        if request_id in self._begun and request_id not in self._recorded:
            return
        self._begun.discard(request_id)
        self._recorded.discard(request_id)
        if self._open.pop(request_id, None) is not None:
            self._ends += b'{"k":"e","id":' + orjson.dumps(request_id) + b"}\n"

    def _add(self, request_id: str, kind: bytes, entry: dict[str, object]) -> None:
        head = b'{"k":"' + kind + b'","id":' + orjson.dumps(request_id)
        body = orjson.dumps(entry)
        line = head + (b"," + body[1:] if len(body) > 2 else b"}") + b"\n"
        self._open.setdefault(request_id, []).append(line)
        self._write(line)

    @property
    def open_calls(self) -> int:
        return len(self._open)

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            return
        if self._ends:
            line, self._ends = self._ends + line, b""
        try:
            os.write(self._fd, line)
        except OSError as exc:  # a full disk must not fail the call: the ledger still has it
            log.error("journal write failed (%s): a crash now would leave calls unreconciled", exc)
            return
        self._appended += 1
        if self._appended >= COMPACT_EVERY:
            self._compact()

    def _compact(self) -> None:
        """Rewrite the journal with the calls still open, swapped in under the same lock."""
        assert self._fd is not None
        tmp = self.path.with_suffix(".compact")
        self._ends = b""  # the rewrite holds only the open calls: the ended ones are gone
        try:
            fd = create_locked(tmp)
            os.write(fd, b"".join(line for lines in self._open.values() for line in lines))
            os.rename(tmp, self.path)
        except OSError as exc:
            log.error("journal compaction failed: %s", exc)
            return
        os.close(self._fd)
        self._fd = fd
        self._appended = 0
