"""Dead letters: ledger rows a store refused for what they hold, kept instead of lost.

A store discards a row only when the row itself is invalid (a value out of range, a field the
schema requires left empty), never because of a lost connection. Such a row was usually served,
so it is appended to a JSON-lines file with the store's reason, counted, and logged: an operator
can read it, fix it, and insert it by hand. Both stores share this file's format.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import orjson

from passerelle.store.records import COLUMNS

log = logging.getLogger("passerelle.store")

_INT64 = (-(2**63), 2**63 - 1)


def _jsonable(value: object) -> object:
    """orjson keeps every value of a row except integers past 64 bits: those become text."""
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        return str(value)
    return value


class DeadLetters:
    """Appends refused rows to ``path`` (one JSON object a line); ``count`` is how many the file
    holds, including those of earlier runs. ``path=None`` keeps none (they are still logged)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        if path is not None and path.is_file():
            with path.open("rb") as f:
                self.count = sum(1 for _ in f)
            if self.count:
                log.warning("%d ledger row(s) were discarded earlier; see %s", self.count, path)

    def keep(self, row: tuple[object, ...], error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"
        self.count += 1
        if self.path is None:
            log.error("ledger row %s discarded (%s); no dead-letter file", row[0], reason)
            return
        entry = {k: _jsonable(v) for k, v in zip(COLUMNS, row, strict=True)}
        entry["error"] = reason
        entry["discarded_at"] = time.time()
        line = orjson.dumps(entry, default=str) + b"\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("ledger row %s discarded (%s) and not kept: %s", row[0], reason, exc)
            return
        log.error(
            "ledger row %s discarded (%s); kept in %s (%d dead letters)",
            row[0],
            reason,
            self.path,
            self.count,
        )
