"""`curate ingest`: load conversation logs into the store."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports
from curation.ingest.readers import FORMATS


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
              help="Record format; auto detects OpenAI chat, ShareGPT, oasst trees and feedback events per file. "
                   "otel: OpenTelemetry OTLP/JSON trace files (GenAI spans; --json adds skipped_spans).")
@click.option("--strict", is_flag=True, help="Exit 1 if any record is quarantined (valid records are still stored).")
@click.option("--max-messages", type=click.IntRange(1), default=None, help="Quarantine conversations with more messages (default 1000).")
@click.option("--max-chars", type=click.IntRange(1), default=None, help="Quarantine conversations with more characters (default 500000).")
@home_option
@json_option
@reports
def ingest(paths, fmt, strict, max_messages, max_chars, home, as_json):
    """Ingest JSONL (plain or .gz), Parquet files, folders of them, or Hugging Face datasets.

    Formats: OpenAI chat records ({"messages": [...], "id"?, "model"?, "created_at"?, "user_id"?, "feedback"?}),
    ShareGPT ({"conversations": [{"from", "value"}]}), the OpenAssistant message-tree export, and feedback events
    ({"conversation_id", "type", "value"?, "turn"?}). Ingesting the same data again adds nothing. Bad records go to a
    quarantine file with file, line and reason; every other record is kept.
    """
    from curation.config import IngestSettings
    from curation.errors import StrictModeError
    from curation.ingest import ingest as run_ingest
    from curation.store import Store

    store = Store.open(home)
    settings = IngestSettings.resolve(store.home, max_messages=max_messages, max_chars=max_chars)
    try:
        summary = run_ingest(store, list(paths), fmt=fmt, strict=strict, settings=settings)
    except StrictModeError as exc:  # the valid records are stored: report them, then fail
        return exc.summary, _human(exc.summary), str(exc)
    return summary, _human(summary)


def _human(s: dict) -> str:
    lines = [
        f"read {s['read']:,}  ingested {s['ingested']:,}  duplicates {s['duplicates']:,}  quarantined {s['quarantined']:,}",
        f"{s['conversations']:,} new conversations, {s['feedback_events']:,} feedback events",
    ]
    if s.get("feedback_waiting"):
        lines[-1] += (f"; {s['feedback_waiting']:,} of them wait for their conversation (not in the store yet; "
                      "they count once it is ingested)")
    if "skipped_spans" in s:
        lines.append(f"{s['skipped_spans']:,} spans skipped (not GenAI chat), {s['skipped_records']:,} log/metric records skipped")
    if s["quarantine_file"]:
        lines.append(f"quarantine: {s['quarantine_file']}")
    return "\n".join(lines)
