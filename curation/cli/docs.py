"""Write docs/cli.md from the commands' own help: `python -m curation.cli.docs > docs/cli.md`."""
from __future__ import annotations

import click

from curation.cli.main import cli

HEADER = """# CLI reference

Generated from `curate --help` by `make docs` (`python -m curation.cli.docs > docs/cli.md`); a test fails when it is stale.
Every command takes `--home DIR`; reporting commands take `--json` and then print exactly one JSON object.
Exit codes: 0 done, 1 failed (one line on stderr), 2 usage error.
"""


def render() -> str:
    parts = [HEADER]

    def walk(command: click.Command, name: str, parent: click.Context | None) -> None:
        # contexts chained as in a real invocation, so every command shows the help options it really has
        ctx = click.Context(command, info_name=name, parent=parent, terminal_width=100, max_content_width=100,
                            help_option_names=["-h", "--help"])
        if parent is not None:
            parts.append(f"\n## `{ctx.command_path}`\n\n```\n{command.get_help(ctx)}\n```\n")
        if isinstance(command, click.Group):
            for sub in sorted(command.list_commands(ctx)):
                walk(command.get_command(ctx, sub), sub, ctx)

    walk(cli, "curate", None)
    return "".join(parts)


if __name__ == "__main__":
    click.echo(render(), nl=False)
