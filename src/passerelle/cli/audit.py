"""``passerelle audit``: verify the audit trail, and export it for an auditor.

``verify`` recomputes every chain with the audit key and names the first bad record of each:
edited, reordered, forged, missing, or cut short (against the checkpoints kept in the store, the
witnesses of later chains, and exported checkpoints given with ``--checkpoints``, which is how
a cut of the newest tail is caught). ``--from`` verifies an export instead of the store. It exits
1 when anything is wrong. ``export`` writes the records and checkpoints as JSON lines: one
object per line, ``"type": "record"`` (the record's canonical JSON text as ``body``, so that the
export itself can be verified) or ``"type": "checkpoint"``. ``--since`` selects the chains with
records since then, each exported whole for the same reason.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import click
import orjson

from passerelle.cli.loading import config_option, load
from passerelle.config.load import Loaded
from passerelle.errors import APIError
from passerelle.sovereignty.audit import verify
from passerelle.store.audit import AuditRecord, Checkpoint, open_audit
from passerelle.store.query import parse_when


@click.group("audit")
def audit_group() -> None:
    """The keyed audit trail of every outbound attempt."""


def _key(loaded: Loaded) -> bytes:
    audit = loaded.config.audit
    if audit is None:
        raise click.UsageError("the configuration has no `audit:` section (and so no trail)")
    key = loaded.secrets.get(audit.key)
    assert key is not None
    return key.encode()


def _read(loaded: Loaded, since: float | None) -> tuple[list[AuditRecord], list[Checkpoint]]:
    async def run() -> tuple[list[AuditRecord], list[Checkpoint]]:
        store = open_audit(loaded.config.store)
        await store.start()
        try:
            return await store.records(since), await store.checkpoints(since)
        finally:
            await store.close()

    return asyncio.run(run())


def _lines(path: str) -> tuple[list[AuditRecord], list[Checkpoint]]:
    records, checkpoints = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if obj.get("type") == "record":
                fields = (obj["chain"], obj["seq"], obj["ts"], obj["body"], obj["hash"])
                records.append(AuditRecord(*fields))
            elif obj.get("type") == "checkpoint":
                fields = (obj["chain"], obj["seq"], obj["hash"], obj["ts"], obj["signature"])
                checkpoints.append(Checkpoint(*fields))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise click.UsageError(f"{path}, line {n}: not an audit export line") from None
    return records, checkpoints


@audit_group.command("verify")
@config_option
@click.option(
    "--checkpoints",
    "extra",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="An export whose checkpoints to check the trail against (kept elsewhere).",
)
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Verify this export instead of the store.",
)
def verify_cmd(config_path: str | None, extra: Sequence[str], source: str | None) -> None:
    """Check every chain; name the first bad record of each."""
    loaded = load(config_path)
    key = _key(loaded)
    records, checkpoints = _lines(source) if source else _read(loaded, None)
    for path in extra:
        checkpoints += _lines(path)[1]
    records.sort(key=lambda r: (r.chain, r.seq))
    problems = verify(key, records, checkpoints)
    chains = len({r.chain for r in records})
    if problems:
        click.secho(f"audit trail BROKEN ({len(problems)} chain(s) of {chains}):", fg="red")
        for problem in problems:
            click.echo(f"  {problem}")
        sys.exit(1)
    click.secho(
        f"audit trail intact: {len(records)} records in {chains} chain(s), "
        f"{len(checkpoints)} checkpoint(s) matched",
        fg="green",
    )


def _write(out: IO[bytes], obj: dict[str, Any]) -> None:
    out.write(orjson.dumps(obj) + b"\n")


@audit_group.command("export")
@config_option
@click.option("--since", default=None, help="ISO date/time or a span like 24h, 7d.")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="File to write (default: standard output).",
)
def export_cmd(config_path: str | None, since: str | None, fmt: str, out: str | None) -> None:
    """Write the records and checkpoints as JSON lines, for an auditor."""
    try:
        since_dt = parse_when(since, "since")
    except APIError as exc:
        raise click.UsageError(exc.message) from None
    loaded = load(config_path)
    _key(loaded)
    records, checkpoints = _read(loaded, None)
    if since_dt is not None:  # whole chains, so that the export verifies on its own
        start = since_dt.timestamp()
        recent = {r.chain for r in records if r.ts >= start}
        records = [r for r in records if r.chain in recent]
        checkpoints = [c for c in checkpoints if c.chain in recent]
    target = open(out, "wb") if out else sys.stdout.buffer  # noqa: SIM115 - closed below
    try:
        for r in records:
            _write(
                target,
                {
                    "type": "record",
                    "chain": r.chain,
                    "seq": r.seq,
                    "ts": r.ts,
                    "hash": r.hash,
                    "body": r.body,
                },
            )
        for c in checkpoints:
            _write(
                target,
                {
                    "type": "checkpoint",
                    "chain": c.chain,
                    "seq": c.seq,
                    "ts": c.ts,
                    "hash": c.hash,
                    "signature": c.signature,
                },
            )
    finally:
        if out:
            target.close()
    if out:
        click.echo(
            f"wrote {len(records)} records and {len(checkpoints)} checkpoints to {out}", err=True
        )
