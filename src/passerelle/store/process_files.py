"""Files a process writes for the next start to read, should it die: held under a lock for life.

The journal of calls in flight (``store/journal.py``) and the audit spool (``store/audit_spool.py``)
are one file per process in the data directory, held under an exclusive ``flock`` while the
process lives. A file whose lock can be taken belongs to a dead process: the next start takes it
over, and workers sharing one directory never take each other's live files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def own_path(directory: Path, prefix: str) -> Path:
    """This process's file: ``<prefix>-<pid>-<random>.jsonl``."""
    return directory / f"{prefix}-{os.getpid()}-{os.urandom(4).hex()}.jsonl"


def create_locked(path: Path) -> int:
    """A new, empty file, opened for appending and locked; its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def take_dead(directory: Path, prefix: str, own: Path) -> list[tuple[Path, int]]:
    """Lock every ``<prefix>-*.jsonl`` file whose process is dead: (path, locked descriptor).
    Files of live processes are left alone."""
    directory.mkdir(parents=True, exist_ok=True)
    taken: list[tuple[Path, int]] = []
    for path in sorted(directory.glob(f"{prefix}-*.jsonl")):
        if path == own:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # compacted or removed by its owner meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process is alive
            continue
        if not path.exists() or os.fstat(fd).st_ino != path.stat().st_ino:
            os.close(fd)  # replaced by a compaction while we looked: its owner lives
            continue
        taken.append((path, fd))
    return taken


def forget(taken: list[tuple[Path, int]]) -> None:
    """What the taken files held is safe elsewhere now: remove them."""
    for path, fd in taken:
        path.unlink(missing_ok=True)
        os.close(fd)
