"""``passerelle router train``: a learned router's artefact from outcomes.

From a file (``--outcomes``, CSV or JSON lines: ``prompt, model, score, cost_usd``;
``routing/outcomes.py``) or from what the gateway recorded (``--from-ledger``: the calls with
feedback and a captured prompt, ``store/outcomes.py``). The artefact (``routing/artefact.py``)
is what a ``learned`` route's ``router:`` names; the gateway reads it at start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from passerelle.cli.loading import config_option, load, with_ledger
from passerelle.errors import OutcomesError, RouterTrainingError
from passerelle.routing.features import Hashing
from passerelle.routing.outcomes import read_outcomes
from passerelle.routing.train import Outcome, train
from passerelle.store.base import Ledger
from passerelle.store.outcomes import LedgerOutcome


@click.group("router")
def router_group() -> None:
    """The learned router: train it from outcomes."""


class _Bar:
    """One progress bar per training phase, on standard error."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.phase: str | None = None
        self.bar: Any = None
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if phase != self.phase:
            self.close()
            self.phase, self.done = phase, 0
            stderr = sys.stderr
            make: Any = click.progressbar
            self.bar = make(length=total, label=f"{phase:>14}", file=stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _from_ledger(rows: list[LedgerOutcome]) -> list[Outcome]:
    return [
        Outcome(r.prompt, r.model, r.score, float(r.cost_usd) if r.cost_usd is not None else 0.0)
        for r in rows
    ]


@router_group.command("train")
@click.option(
    "--outcomes",
    "outcomes_path",
    type=click.Path(dir_okay=False),
    help="CSV or JSON lines, one row per (prompt, model): prompt, model, score (0..1), cost_usd.",
)
@click.option(
    "--from-ledger",
    is_flag=True,
    help="Train on the calls the ledger holds feedback and a captured prompt for.",
)
@click.option("--tenant", default=None, help="With --from-ledger: this tenant's calls only.")
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False), help="The artefact to write."
)
@click.option(
    "--dim",
    default=4096,
    show_default=True,
    type=click.IntRange(16, 1 << 16),
    help="Hashed feature buckets.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@config_option
def train_cmd(
    outcomes_path: str | None,
    from_ledger: bool,
    tenant: str | None,
    out: str,
    dim: int,
    quiet: bool,
    config_path: str | None,
) -> None:
    """Train a learned router and write its artefact (a versioned .npz, no pickle)."""
    if bool(outcomes_path) == from_ledger:
        raise click.UsageError("give exactly one of --outcomes FILE and --from-ledger")
    if outcomes_path:
        try:
            outcomes = read_outcomes(outcomes_path)
        except OutcomesError as exc:
            raise click.ClickException(str(exc)) from None
        source = outcomes_path
    else:
        loaded = load(config_path)

        async def fetch(ledger: Ledger) -> list[LedgerOutcome]:
            return await ledger.outcomes(tenant)

        outcomes = _from_ledger(with_ledger(loaded, fetch))
        source = "the ledger"
        if not outcomes:
            raise click.ClickException(
                "the ledger holds no call with both feedback (POST /v1/feedback) and a captured "
                "prompt (prompt_capture: in the configuration)"
            )
    bar = _Bar(quiet)
    try:
        artefact = train(outcomes, hashing=Hashing(dim=dim), progress=bar)
    except RouterTrainingError as exc:
        raise click.ClickException(f"{source}: {exc}") from None
    finally:
        bar.close()
    artefact.trained["source"] = source
    artefact.save(out)
    size = Path(out).stat().st_size
    click.echo(
        f"trained on {artefact.trained['prompts']} prompts, {len(outcomes)} outcomes, "
        f"{len(artefact.models)} models; ridge lambda {artefact.ridge_lambda:g}; "
        f"familiarity floor {artefact.familiarity_floor:.3f}"
    )
    for name, q in zip(artefact.models, artefact.bias, strict=True):
        click.echo(f"  {name}: mean score {float(q):.3f}")
    click.echo(f"wrote {out} ({size} bytes)")
