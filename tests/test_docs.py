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
