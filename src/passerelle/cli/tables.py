"""Plain-text tables for the reports that print sections of rows (``independence``, ``drill``):
left-aligned labels, right-aligned figures, a rule under the head, as ``usage`` prints them."""

from __future__ import annotations

from collections.abc import Sequence

import click


def share(value: object) -> str:
    """A fraction as a percentage with one decimal; ``-`` when there is none."""
    return "-" if not isinstance(value, int | float) else f"{value:.1%}"


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    labels: int = 1,
    total: Sequence[str] | None = None,
) -> str:
    """``rows`` under ``head``; the first ``labels`` columns are text, the others figures."""
    every = [list(head), *(list(r) for r in rows), *([list(total)] if total else [])]
    widths = [max(len(r[i]) for r in every) for i in range(len(head))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < labels else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [fmt(head), rule, *(fmt(r) for r in rows)]
    if total:
        lines += [rule, fmt(total)]
    return "\n".join(lines)


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for people, or the JSON the admin API answers.",
)
