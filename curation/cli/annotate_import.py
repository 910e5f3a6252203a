"""`curate annotate import`: ratings made elsewhere, stored like pulled ones (no Argilla server needed)."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dataset", required=True,
              help="Dataset the ratings belong to (the one they would have been pushed to and pulled from).")
@click.option("--annotator", default=None,
              help="Annotator of the rows that do not name one in an `annotator` column (default: import:FILE_NAME).")
@click.option("--workspace", default=None,
              help="Argilla workspace of the dataset, recorded with the import (nothing is sent to Argilla).")
@home_option
@json_option
@reports
def import_command(file, dataset, annotator, workspace, home, as_json):
    """Import HelpSteer2-style ratings from a JSONL, CSV or Parquet FILE. Idempotent: a second import adds nothing.

    Columns: conversation_id, any of helpfulness, correctness, coherence, complexity, verbosity (whole numbers 0–4,
    blank when not rated), optional annotator and rated_at (ISO 8601). Valid rows are committed in one transaction;
    rows that cannot be used (unknown conversation, a value outside 0–4, no rating, a malformed line, the same
    conversation and annotator rated otherwise before) go to a quarantine file with their line and reason.
    """
    from annotations.rating_import import import_ratings
    from curation.store import Store

    r = import_ratings(Store.open(home), file, dataset, workspace=workspace, annotator=annotator)
    text = (f"imported {r['imported']:,} ratings of {r['conversations']:,} conversations into {dataset!r} from "
            f"{r['file']}; {r['duplicates']:,} duplicates, {r['quarantined']:,} quarantined")
    if r["quarantine_file"]:
        text += f" (reasons in {r['quarantine_file']})"
    return r, text


COMMANDS = [import_command]
