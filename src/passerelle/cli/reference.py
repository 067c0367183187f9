"""The CLI reference (``docs/cli.md``), generated from the commands' own help.

``python -m passerelle.cli.reference > docs/cli.md``; a test checks the file matches, so the docs
cannot drift from the commands.
"""

from __future__ import annotations

import click

from passerelle.cli.main import cli


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            sub = cmd.commands[name]
            if not sub.hidden:
                found.extend(_walk(sub, [*path, name]))
    return found


def cli_markdown() -> str:
    out = [
        "# CLI reference",
        "",
        "Generated from the commands' help by `python -m passerelle.cli.reference`.",
        "",
    ]
    for path, cmd in _walk(cli, ["passerelle"]):
        with click.Context(
            cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100
        ) as ctx:
            out += [f"## `{' '.join(path)}`", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    click.echo(cli_markdown(), nl=False)
