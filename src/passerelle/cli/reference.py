"""The CLI reference (``docs/cli.md``), generated from the commands' own help.

``python -m passerelle.cli.reference > docs/cli.md``; a test checks the file matches, so the docs
cannot drift from the commands.
"""

from __future__ import annotations

import click

from passerelle.cli.main import cli


def _walk(cmd: click.Command, ctx: click.Context) -> list[click.Context]:
    """Every command's context, each the child of its group's, as a person's ``-h`` builds them
    (so a group's ``context_settings``, such as ``-h`` for help, reach its commands)."""
    found = [ctx]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            sub = cmd.commands[name]
            if not sub.hidden:
                found.extend(_walk(sub, _context(sub, name, ctx)))
    return found


def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    return click.Context(
        cmd,
        parent=parent,
        info_name=name,
        terminal_width=100,
        max_content_width=100,
        **cmd.context_settings,
    )


def cli_markdown() -> str:
    out = [
        "# CLI reference",
        "",
        "Generated from the commands' help by `python -m passerelle.cli.reference`.",
        "",
    ]
    for ctx in _walk(cli, _context(cli, "passerelle", None)):
        path = ctx.command_path
        out += [f"## `{path}`", "", "```", ctx.command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    click.echo(cli_markdown(), nl=False)
