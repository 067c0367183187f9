"""The journal of calls in flight: what a dead process leaves is found, a live one's is not."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from passerelle.store import journal as journal_module
from passerelle.store.journal import Journal

WHO = {"at": 1.0, "tenant": "acme", "endpoint": "chat.completions", "user": "u1"}
HOLD = {"at": 1.0, "amount": 1500, "tokens": 70, "budgets": ["tenant:acme:month:2026-12"]}


def die(j: Journal) -> None:
    """The process is killed: its descriptor (and so its lock) goes, nothing is flushed."""
    assert j._fd is not None
    os.close(j._fd)
    j._fd = None


def test_calls_left_open_are_found_by_the_next_process(tmp_path: Path) -> None:
    dead = Journal(tmp_path)
    dead.open()
    dead.reserve("held", HOLD)  # killed between its reservation and dispatch
    dead.reserve("upstream", HOLD)
    dead.begin("upstream", WHO)  # killed while the upstream answered
    dead.begin("recorded", WHO)
    dead.recorded("recorded")  # killed between its row and its end
    dead.reserve("done", HOLD)
    dead.begin("done", WHO)
    dead.recorded("done")
    dead.end("done")
    dead.reserve("refused", HOLD)
    dead.end("refused")
    dead.begin("last", WHO)  # the ends before it are written with it
    dead.recorded("last")
    dead.end("last")  # its end waits for the next write, which never comes
    assert dead._fd is not None
    os.write(dead._fd, b'{"k":"b","id":"torn"')  # the crash cut the last line
    die(dead)

    nxt = Journal(tmp_path)
    found = {f.request_id: f for f in nxt.take_over()}
    # a lost end costs only work: recovery asks the ledger, finds the row, settles a gone hold
    assert set(found) == {"held", "upstream", "recorded", "last"}
    held, upstream, recorded = found["held"], found["upstream"], found["recorded"]
    assert (held.begun, held.amount_nano, held.budgets) == (
        False,
        1500,
        ("tenant:acme:month:2026-12",),
    )
    assert (upstream.begun, upstream.amount_nano, upstream.end_user) == (True, 1500, "u1")
    # whether its row was committed is the ledger's to say (recovery asks it), not the journal's
    assert (recorded.begun, recorded.amount_nano) == (True, None)
    nxt.forget_taken()
    assert not dead.path.exists()


def test_a_live_process_journal_is_left_alone(tmp_path: Path) -> None:
    live = Journal(tmp_path)
    live.open()
    live.begin("in-flight", WHO)
    other = Journal(tmp_path)
    assert other.take_over() == []
    other.forget_taken()
    assert live.path.exists()
    live.close()


def test_a_dispatched_call_whose_row_was_never_committed_stays_open(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    j.reserve("unrecorded", HOLD)
    j.begin("unrecorded", WHO)
    j.end("unrecorded")  # the ledger failed: no `recorded` mark
    assert j.open_calls == 1
    j.close()
    assert j.path.exists()  # kept for the next start to reconcile


def test_compaction_keeps_only_the_open_calls(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(journal_module, "COMPACT_EVERY", 10)
    j = Journal(tmp_path)
    j.open()
    j.reserve("open", HOLD)
    j.begin("open", WHO)
    j.recorded("open")
    for i in range(10):
        j.begin(f"r{i}", WHO)
        j.recorded(f"r{i}")
        j.end(f"r{i}")
    assert len(j.path.read_bytes().splitlines()) < 10
    die(j)
    found = Journal(tmp_path).take_over()
    assert (found[0].request_id, found[0].begun, found[0].amount_nano) == ("open", True, 1500)
    # past the rewrite, an end not yet written leaves its call to be asked about, nothing more
    assert {f.request_id for f in found[1:]} <= {f"r{i}" for i in range(10)}
    assert len(found) <= 2


def test_a_clean_stop_with_nothing_open_leaves_no_file(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    j.begin("a", WHO)
    j.recorded("a")
    j.end("a")
    j.close()
    assert not j.path.exists()


def test_a_call_costs_two_lines_and_three_with_a_reservation(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.open()
    j.begin("plain", WHO)
    j.recorded("plain")
    j.end("plain")
    j.reserve("held", HOLD)
    j.begin("held", WHO)
    j.recorded("held")
    j.end("held")
    j.reserve("next", HOLD)
    lines = [orjson.loads(line) for line in j.path.read_bytes().splitlines()][:-1]
    assert [(e["k"], e["id"]) for e in lines] == [
        ("b", "plain"),
        ("e", "plain"),
        ("v", "held"),
        ("b", "held"),
        ("e", "held"),
    ]
    assert lines[0] == {"k": "b", "id": "plain", **WHO}
    j.close()


def test_an_end_goes_with_the_next_write_and_a_clean_stop_writes_what_is_left(
    tmp_path: Path,
) -> None:
    j = Journal(tmp_path)
    j.open()
    j.begin("a", WHO)
    j.recorded("a")
    j.end("a")
    assert [orjson.loads(line)["k"] for line in j.path.read_bytes().splitlines()] == ["b"]
    j.begin("b", WHO)  # one write: a's end, then b's begin
    assert [orjson.loads(line)["k"] for line in j.path.read_bytes().splitlines()] == [
        "b",
        "e",
        "b",
    ]
    j.begin("c", WHO)
    j.recorded("c")
    j.end("c")
    j.close()  # b is still open: the file stays, with c's end in it
    assert [f.request_id for f in Journal(tmp_path).take_over()] == ["b"]
