"""Ingest conversation logs into the store: streaming, batched, idempotent, with a quarantine for bad records.

Every record read is accounted for: `read == ingested + duplicates + quarantined`. For the oasst tree format a
record is one message, placed in one or more threads or quarantined. A record whose `id` is stored already is a
duplicate when its content is the same, and a conflict (quarantined, naming both content hashes) when it is not.
The unreadable rest of a truncated .gz file counts as one quarantined record, and its run ends "partial".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import orjson
from tqdm import tqdm

from curation.config import IngestSettings
from curation.errors import StrictModeError
from curation.ingest.job import IngestJob
from curation.ingest.readers import Item, expand
from curation.ingest.writer import COLUMNS, FB_COLUMNS
from curation.store import Store

__all__ = ["COLUMNS", "FB_COLUMNS", "IngestJob", "ingest", "ingest_records"]


def ingest(
    store: Store,
    paths: list[str | Path],
    fmt: str = "auto",
    strict: bool = False,
    settings: IngestSettings | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Ingest files, folders or datasets; returns the summary (`read`, `ingested`, `duplicates`, `quarantined`, …).

    `progress=None` draws a bar only on a terminal. With `strict`, any quarantined record raises StrictModeError
    after the valid ones are stored (the summary is on the exception as `.summary`).
    """
    sources = expand([str(p) for p in paths], fmt)
    settings = settings or IngestSettings.resolve(store.home)
    total = sum(s.size for s in sources if s.kind == "jsonl") or None
    with store.run("ingest", {"paths": [s.path for s in sources], "format": fmt}) as run, \
            tqdm(total=total, unit="B", unit_scale=True, desc="ingest",
                 disable=None if progress is None else not progress) as bar:
        job = IngestJob(store, run.id, settings)
        run.progress = job.summary
        extra: dict[str, int] = {}
        try:
            if fmt == "otel":  # spans of one conversation may be anywhere in the files: one reader for all of them
                extra = job.run_otel(sources, bar.update)
            else:
                for source in sources:
                    job.run(source, fmt, bar.update)
            job.finish()
        except BaseException:
            job.close()
            raise
        summary = run.finish({**job.summary(), **extra}, "partial" if job.truncated else "done")
    if strict and summary["quarantined"]:
        error = StrictModeError(
            f"{summary['quarantined']} record(s) quarantined with reasons in {summary['quarantine_file']}; "
            "fix them and ingest that file again, or drop --strict"
        )
        error.summary = summary
        raise error
    return summary


def ingest_records(store: Store, records: Iterable[dict], source: str = "api", settings: IngestSettings | None = None) -> dict:
    """Ingest in-memory records (chat, ShareGPT or feedback events); used by the logging API and tests."""
    settings = settings or IngestSettings.resolve(store.home)
    with store.run("ingest", {"source": source}) as run:
        job = IngestJob(store, run.id, settings)
        run.progress = job.summary
        items = (Item(source, i, orjson.dumps(r, default=str), r) for i, r in enumerate(records, 1))
        try:
            job.run_items(items, "auto", source)
            job.finish()
        finally:
            job.close()
        return run.finish(job.summary())
