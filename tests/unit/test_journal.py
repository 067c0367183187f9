"""The journal of calls in flight: what a dead process leaves is found, a live one's is not."""

from __future__ import annotations

import os
from pathlib import Path

from passerelle.store import journal as journal_module
from passerelle.store.journal import Journal


def entry(rid: str, **extra: object) -> dict[str, object]:
    return {"id": rid, "at": 1.0, "tenant": "acme", "endpoint": "chat.completions", **extra}


def test_calls_begun_and_never_ended_are_found_by_the_next_process(tmp_path: Path) -> None:
    dead = Journal(tmp_path)
    dead.open()
    dead.begin(entry("a", amount=1500, tokens=70, budgets=["tenant:acme:month:2026-12"]))
    dead.begin(entry("b"))
    dead.recorded("b")
    dead.begin(entry("c"))
    dead.recorded("c")
    dead.end("c")
    assert dead._fd is not None
    os.write(dead._fd, b'{"k":"b","id":"torn"')  # the crash cut the last line
    os.close(dead._fd)  # the process dies: its lock goes with it
    dead._fd = None

    nxt = Journal(tmp_path)
    found = {f.request_id: f for f in nxt.take_over()}
    assert set(found) == {"a", "b"}
    assert (found["a"].amount_nano, found["a"].tokens, found["a"].recorded) == (1500, 70, False)
    assert found["a"].budgets == ("tenant:acme:month:2026-12",)
    assert (found["b"].amount_nano, found["b"].recorded) == (None, True)
    nxt.forget_taken()
    assert not dead.path.exists()


def test_a_live_process_journal_is_left_alone(tmp_path: Path) -> None:
    live = Journal(tmp_path)
    live.open()
    live.begin(entry("in-flight"))
    other = Journal(tmp_path)
    assert other.take_over() == []
    other.forget_taken()
    assert live.path.exists()
    live.close()


def test_a_call_whose_row_was_never_committed_stays_open(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    j.begin(entry("unrecorded"))
    j.end("unrecorded")  # the ledger failed: no `recorded` mark
    assert j.open_calls == 1
    j.close()
    assert j.path.exists()  # kept for the next start to reconcile


def test_compaction_keeps_only_the_open_calls(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(journal_module, "COMPACT_EVERY", 10)
    j = Journal(tmp_path)
    j.open()
    j.begin(entry("open"))
    j.recorded("open")
    for i in range(10):
        j.begin(entry(f"r{i}"))
        j.recorded(f"r{i}")
        j.end(f"r{i}")
    lines = j.path.read_bytes().splitlines()
    assert len(lines) < 10
    j.close()
    found = Journal(tmp_path).take_over()
    assert [(f.request_id, f.recorded) for f in found] == [("open", True)]
    j2 = Journal(tmp_path)
    j2.open()
    j2.close()
    assert not j2.path.exists()  # a clean stop with nothing open leaves no file
