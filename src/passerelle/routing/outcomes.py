"""Reading an outcomes file: CSV or JSON lines, one row per (prompt, model).

Columns (CSV header, or JSON keys): ``prompt`` (text), ``model`` (a name from ``models:``),
``score`` (0..1: 1 is a perfect answer) and ``cost_usd`` (what that call cost, ≥ 0); other
columns are ignored. A file whose name ends in ``.jsonl``/``.ndjson``/``.json``, or whose first
character is ``{``, is JSON lines; anything else is CSV. A bad row stops the reading with its
line number and what is wrong, since a router trained on a silently skipped half of a file is
worse than no router.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from passerelle.errors import OutcomesError
from passerelle.routing.train import Outcome

REQUIRED = ("prompt", "model", "score", "cost_usd")
csv.field_size_limit(64 * 1024 * 1024)


def _number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool):
        raise OutcomesError(f"{where}: {field} must be a number, not {value!r}")
    try:
        n = float(value)
    except (TypeError, ValueError):
        raise OutcomesError(f"{where}: {field} must be a number, not {value!r}") from None
    if not math.isfinite(n):
        raise OutcomesError(f"{where}: {field} must be finite, not {value!r}")
    return n


def outcome(row: dict[str, Any], where: str) -> Outcome:
    missing = [k for k in REQUIRED if row.get(k) in (None, "")]
    if missing:
        raise OutcomesError(f"{where}: missing {', '.join(missing)}")
    prompt, model = row["prompt"], row["model"]
    if not isinstance(prompt, str) or not isinstance(model, str):
        raise OutcomesError(f"{where}: prompt and model must be text")
    score = _number(row["score"], "score", where)
    if not 0 <= score <= 1:
        raise OutcomesError(f"{where}: score must be from 0 to 1, not {score:g}")
    cost = _number(row["cost_usd"], "cost_usd", where)
    if cost < 0:
        raise OutcomesError(f"{where}: cost_usd must not be negative, not {cost:g}")
    return Outcome(prompt=prompt, model=model, score=score, cost_usd=cost)


def _jsonl(path: Path) -> Iterator[Outcome]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OutcomesError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise OutcomesError(f"{where}: each line must be a JSON object")
            yield outcome(row, where)


def _csv(path: Path) -> Iterator[Outcome]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        absent = [k for k in REQUIRED if k not in (reader.fieldnames or [])]
        if absent:
            raise OutcomesError(
                f"{path}: the CSV header lacks {', '.join(absent)} (it needs "
                f"{', '.join(REQUIRED)}; found {', '.join(reader.fieldnames or []) or 'none'})"
            )
        for row in reader:
            yield outcome(row, f"{path}:{reader.line_num}")


def read_outcomes(path: str | Path) -> list[Outcome]:
    p = Path(path)
    try:
        with p.open(encoding="utf-8") as f:
            first = f.read(1)
    except OSError as exc:
        raise OutcomesError(f"{p}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise OutcomesError(f"{p}: not UTF-8 text") from None
    jsonl = p.suffix.lower() in (".jsonl", ".ndjson", ".json") or first == "{"
    try:
        rows = list(_jsonl(p) if jsonl else _csv(p))
    except UnicodeDecodeError:
        raise OutcomesError(f"{p}: not UTF-8 text") from None
    if not rows:
        raise OutcomesError(f"{p}: no outcomes in it")
    return rows
