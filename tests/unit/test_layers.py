"""The layering is written down as import contracts (``[tool.importlinter]`` in pyproject.toml)
and checked here as well as by ``make contracts``: a change that makes the store import
economics, a provider read the configuration, a command import an HTTP handler, or any cycle,
fails the test run too.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LINT = (
    "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
)


def contracts() -> list[dict[str, Any]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        found: list[dict[str, Any]] = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return found


def test_the_import_contracts_hold() -> None:
    # in a process of its own: import-linter configures logging for the whole interpreter
    run = subprocess.run(
        [sys.executable, "-c", LINT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"an import contract is broken (`make contracts`):\n{run.stdout}"


def test_the_layering_the_project_promises_is_among_the_contracts() -> None:
    """Deleting a contract is not a way to pass: the promised ones must stay written down."""
    kinds = {(c["type"], tuple(sorted(c.get("source_modules", [])))) for c in contracts()}
    assert ("acyclic_siblings", ()) in kinds
    for source in ("passerelle.store", "passerelle.providers", "passerelle.pipeline"):
        assert ("forbidden", (source,)) in kinds
    forbidden = {
        (src, dst)
        for c in contracts()
        if c["type"] == "forbidden"
        for src in c["source_modules"]
        for dst in c["forbidden_modules"]
    }
    assert ("passerelle.store", "passerelle.economics") in forbidden
    assert ("passerelle.providers", "passerelle.config") in forbidden
    assert {
        ("passerelle.pipeline", "passerelle.server"),
        ("passerelle.pipeline", "passerelle.cli"),
    } <= forbidden
    assert {
        ("passerelle.cli", "passerelle.server.routes"),
        ("passerelle.cli", "passerelle.server.admin"),
    } <= forbidden
    layers = {tuple(c["containers"]): c for c in contracts() if c["type"] == "layers"}
    assert layers[("passerelle.cli",)]["exhaustive"] is True
    package = layers[("passerelle",)]["layers"]
    assert package.index("cli") < package.index("server") < package.index("pipeline")
    assert package.index("pipeline") < package.index("store | providers")
