"""The audit trail's chain: keyed hashes that make every edit, deletion, reordering or cut visible.

Each record's hash is an HMAC-SHA256, under the operator's audit key, of the previous record's
hash and the record's canonical JSON; the first record of a chain starts from a value derived
from the chain's name. Without the key nobody can write a record, or rewrite one, whose hash
verifies: an unkeyed hash chain catches accidents, a keyed one an insider who rewrites the
table too. There is one chain per gateway process (its ``chain`` is named when the process
starts): replicas never coordinate on the request path, where one shared chain would need a
global order, a lock or a round trip per attempt. A new chain's first record witnesses the heads
of the chains already in the store, so deleting or cutting an older chain breaks a later one;
the newest chain's tail is covered by **checkpoints**: the signed head of the chain, taken every
``checkpoint_every_s`` and at shutdown, exported and kept elsewhere (``passerelle audit
export``). ``verify`` names the first bad record of each chain.

End users appear only as a keyed pseudonym (``pseudonym``): the same user is the same
pseudonym across records, and nobody without the key can tell who it is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import orjson

from passerelle.store.audit import AuditRecord, Checkpoint


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def canonical(body: dict[str, Any]) -> str:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def origin(key: bytes, chain: str) -> str:
    """The value a chain's first record is hashed after."""
    return _mac(key, "origin", chain)


def link(key: bytes, previous: str, body: str) -> str:
    return _mac(key, "record", previous, body)


def pseudonym(key: bytes, user: str) -> str:
    return "u_" + _mac(key, "user", user)[:20]


def sign(key: bytes, chain: str, seq: int, head: str, ts: float) -> Checkpoint:
    return Checkpoint(
        chain, seq, head, ts, _mac(key, "checkpoint", chain, str(seq), head, repr(ts))
    )


class Chain:
    """One process's chain: appends records in order, in memory (the writer stores them)."""

    def __init__(self, key: bytes, name: str) -> None:
        self.key = key
        self.name = name
        self.seq = 0
        self.head = origin(key, name)

    def append(self, body: dict[str, Any], ts: float) -> AuditRecord:
        text = canonical(body)
        self.seq += 1
        self.head = link(self.key, self.head, text)
        return AuditRecord(self.name, self.seq, ts, text, self.head)

    def checkpoint(self, ts: float) -> Checkpoint:
        return sign(self.key, self.name, self.seq, self.head, ts)


@dataclass(frozen=True, slots=True)
class Problem:
    chain: str
    seq: int  # the first bad record (or where the chain should have gone on)
    what: str

    def __str__(self) -> str:
        return f"chain {self.chain}, record {self.seq}: {self.what}"


def _verify_chain(key: bytes, chain: str, records: list[AuditRecord]) -> Problem | None:
    head = origin(key, chain)
    for expected, record in enumerate(records, start=1):
        if record.seq != expected:
            return Problem(chain, expected, f"missing (the next record is {record.seq})")
        head = link(key, head, record.body)
        if not hmac.compare_digest(head, record.hash):
            return Problem(chain, record.seq, "edited, reordered or forged (its hash is wrong)")
    return None


def _witnessed(records: Sequence[AuditRecord]) -> Iterable[tuple[str, int, str]]:
    for record in records:
        body = orjson.loads(record.body)
        for chain, (seq, head) in (body.get("witness") or {}).items():
            yield chain, int(seq), str(head)


def verify(
    key: bytes, records: Sequence[AuditRecord], checkpoints: Sequence[Checkpoint] = ()
) -> list[Problem]:
    """Every problem found, at most one per chain: the first bad record. ``records`` in chain and
    seq order; ``checkpoints`` from the store and from exports kept elsewhere."""
    chains = {c: list(rs) for c, rs in groupby(records, key=lambda r: r.chain)}
    problems = {c: p for c, rs in chains.items() if (p := _verify_chain(key, c, rs)) is not None}
    hashes = {(r.chain, r.seq): r.hash for r in records}
    anchors = [(c.chain, c.seq, c.hash, "checkpoint") for c in checkpoints if _signed(key, c)]
    anchors += [(c, s, h, "witness") for c, s, h in _witnessed(records)]
    for chain, seq, head, kind in anchors:
        if chain in problems:
            continue
        found = hashes.get((chain, seq))
        if found is None:
            last = len(chains.get(chain, ()))
            problems[chain] = Problem(chain, last + 1, f"cut: a {kind} saw it reach record {seq}")
        elif not hmac.compare_digest(found, head):
            problems[chain] = Problem(chain, seq, f"rewritten since a {kind} of it")
    for c in checkpoints:
        if not _signed(key, c):
            problems.setdefault(c.chain, Problem(c.chain, c.seq, "a checkpoint is forged"))
    return sorted(problems.values(), key=lambda p: (p.chain, p.seq))


def _signed(key: bytes, c: Checkpoint) -> bool:
    expected = sign(key, c.chain, c.seq, c.hash, c.ts).signature
    return hmac.compare_digest(expected, c.signature)
