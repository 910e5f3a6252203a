"""docs/cli.md is generated from the click help; regenerate it with `make docs` when this fails."""
from pathlib import Path

from curation.cli.docs import render

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_cli_reference_is_current():
    assert (DOCS / "cli.md").read_text() == render(), "docs/cli.md is stale: run `make docs`"


def test_docs_name_no_machine_paths():
    for page in DOCS.glob("*.md"):
        text = page.read_text()
        assert "/work/" not in text and "/root/" not in text, page
