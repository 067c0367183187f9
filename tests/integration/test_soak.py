"""The soak battery, fast: a few seconds of sustained open-loop load through a real gateway with
budgets, rate limits and idempotency keys on; every request answered, every one in the ledger.

The long version (``bench/soak.py``, minutes of load) also watches memory after a warm-up; a run
this short cannot tell a plateau from growth, so here memory is only bounded loosely and the
verdict rests on errors and the ledger.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_short_sustained_load_has_no_error_and_an_exact_ledger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = soak_module().main(
        [
            "--duration",
            "8",
            "--interval",
            "2",
            "--warmup",
            "4",
            "--rate",
            "80",
            "--max-growth",
            "0.5",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "errors 0" in out and "OK" in out, out
