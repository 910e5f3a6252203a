"""`curate export …`: datasets out of the store."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports


@click.group()
def export() -> None:
    """Export conversations, preference pairs or ratings for other tools."""


@export.command("conversations")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output file: .jsonl, .jsonl.gz or .parquet.")
@home_option
@json_option
@reports
def conversations(out, home, as_json):
    """One row per conversation: id, messages, model, created_at, feedback, and each stage's columns
    (cluster_id, cluster_label, failure_score, signals, reward once those stages have run)."""
    from curation.export import export_conversations
    from curation.store import Store

    result = export_conversations(Store.open(home), out)
    return result, f"wrote {result['rows']:,} conversations to {result['out']}"

[export.add_command(command) for command in __import__("curation.cli.export_learn", fromlist=["COMMANDS"]).COMMANDS]  # preferences, ratings
