"""The generated references in docs/ match the code: configuration schema and CLI help."""

from __future__ import annotations

from pathlib import Path

from passerelle.cli.reference import cli_markdown
from passerelle.config.reference import reference_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_configuration_reference_is_generated_from_the_schema() -> None:
    assert (DOCS / "configuration.md").read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run `make docs`"
    )


def test_cli_reference_is_generated_from_the_commands() -> None:
    assert (DOCS / "cli.md").read_text() == cli_markdown(), "docs/cli.md is stale: run `make docs`"


def test_the_readme_quick_start_is_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
