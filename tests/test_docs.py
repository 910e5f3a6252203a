"""docs/cli.md is generated from the click help; regenerate it with `make docs` when this fails."""
from pathlib import Path

from curation.cli.docs import render

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_reference_is_current():
    assert (DOCS / "cli.md").read_text() == render(), "docs/cli.md is stale: run `make docs`"


def test_docs_name_no_machine_paths():
    here = str(DOCS.parent.parent)  # the folder the checkout lives in: docs must not name it
    for page in DOCS.glob("*.md"):
        assert here not in page.read_text(), page


def test_every_option_says_what_it_does():
    import click

    from curation.cli.main import cli

    def silent(command: click.Command, path: str):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from silent(sub, f"{path} {name}")
        yield from (f"{path} {p.opts[0]}" for p in command.params
                    if isinstance(p, click.Option) and not p.help and p.name != "help")

    assert list(silent(cli, "curate")) == []
