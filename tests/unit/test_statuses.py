"""The ledger's ``status``: one list (``Status``), and every status the code writes is on it."""

from __future__ import annotations

import re
from pathlib import Path

from passerelle.store.records import Status

SRC = Path(__file__).resolve().parents[2] / "src" / "passerelle"
# a status written or compared as a literal: `call.status = "replayed"`, `status != "ok"`
LITERAL = re.compile(r"""\bstatus\s*(?:=|==|!=|<>)\s*['"]([a-z_]+)['"]""")


def literal_statuses() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for value in LITERAL.findall(path.read_text(encoding="utf-8")):
            found.setdefault(value, set()).add(str(path.relative_to(SRC)))
    return found


def test_every_status_the_code_writes_or_compares_is_a_status() -> None:
    found = literal_statuses()
    assert found, "the scan finds the statuses the answer path still writes as text"
    unknown = {v: where for v, where in found.items() if v not in set(Status)}
    assert not unknown, f"statuses missing from records.Status: {unknown}"


def test_the_statuses_are_the_ledger_s_text_values() -> None:
    assert {s.value for s in Status} == {
        "ok",
        "error",
        "client_disconnected",
        "upstream_cut",
        "replayed",
        "attempt_failed",
        "interrupted",
    }
    assert str(Status.REPLAYED) == "replayed" and f"{Status.ATTEMPT_FAILED}" == "attempt_failed"
