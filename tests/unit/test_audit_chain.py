"""The audit chain (``sovereignty/audit.py``): every way of rewriting history is named.

Records are chained with a keyed hash; an insider with the database but not the key edits a
record, deletes one, swaps two, cuts the tail (and the checkpoints kept beside it), or deletes an
older chain, and ``verify`` names the first bad record each time. Only an exported checkpoint
catches a cut of the newest tail together with the store's own checkpoints.
"""

from __future__ import annotations

import dataclasses

from passerelle.sovereignty.audit import Chain, pseudonym, verify
from passerelle.store.audit import AuditRecord, Checkpoint

KEY = b"audit-key"


def chain(name: str = "a", n: int = 5) -> tuple[list[AuditRecord], Checkpoint]:
    c = Chain(KEY, name)
    records = [c.append({"event": "attempt", "i": i}, float(i)) for i in range(n)]
    return records, c.checkpoint(99.0)


def test_an_untouched_chain_verifies() -> None:
    records, checkpoint = chain()
    assert verify(KEY, records, [checkpoint]) == []


def test_an_edited_record_is_named() -> None:
    records, _ = chain()
    records[2] = dataclasses.replace(records[2], body=records[2].body.replace('"i":2', '"i":7'))
    [problem] = verify(KEY, records)
    assert (problem.chain, problem.seq) == ("a", 3) and "edited" in problem.what


def test_a_deleted_record_is_named() -> None:
    records, _ = chain()
    del records[1]
    [problem] = verify(KEY, records)
    assert problem.seq == 2 and "missing" in problem.what


def test_two_swapped_records_are_caught() -> None:
    records, _ = chain()
    a, b = records[1], records[2]
    records[1] = dataclasses.replace(b, seq=2)
    records[2] = dataclasses.replace(a, seq=3)
    [problem] = verify(KEY, records)
    assert problem.seq == 2


def test_a_cut_tail_is_caught_by_a_checkpoint_kept_elsewhere() -> None:
    records, checkpoint = chain()
    assert verify(KEY, records[:3]) == []  # without it, a cut tail looks like a shorter chain
    [problem] = verify(KEY, records[:3], [checkpoint])
    assert problem.seq == 4 and "cut" in problem.what


def test_a_later_chain_witnesses_the_older_ones() -> None:
    older, _ = chain("a")
    later = Chain(KEY, "b")
    witness = {"a": [older[-1].seq, older[-1].hash]}
    newer = [later.append({"event": "chain_started", "witness": witness}, 10.0)]
    assert verify(KEY, older + newer) == []
    [problem] = verify(KEY, older[:2] + newer)
    assert problem.chain == "a" and "witness" in problem.what


def test_a_forged_checkpoint_is_named() -> None:
    records, checkpoint = chain()
    forged = dataclasses.replace(checkpoint, seq=9)
    [problem] = verify(KEY, records, [forged])
    assert "forged" in problem.what


def test_without_the_key_nothing_verifies() -> None:
    records, _ = chain()
    assert verify(b"another key", records)[0].seq == 1


def test_an_end_user_is_a_stable_keyed_pseudonym() -> None:
    assert pseudonym(KEY, "alice@example.com") == pseudonym(KEY, "alice@example.com")
    assert pseudonym(KEY, "alice@example.com") != pseudonym(b"other", "alice@example.com")
    assert "alice" not in pseudonym(KEY, "alice@example.com")
