"""Ingest conversation logs into the store: streaming, batched, idempotent, with a quarantine for bad records.

Every record read is accounted for: `read == ingested + duplicates + quarantined`. For the oasst tree format a
record is one message, placed in one or more threads or quarantined.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any, Iterable

import orjson
from tqdm import tqdm

from curation.config import IngestSettings
from curation.errors import StrictModeError
from curation.ingest import oasst
from curation.ingest.readers import Item, Source, expand, jsonl_lines, parse_line, read
from curation.ingest.parse import parse_chunk, parse_item
from curation.ingest.records import Conversation, Limits, classify
from curation.store import Store, existing_ids, insert_rows, utcnow
from curation.store.tables import conversations, feedback

__all__ = ["ingest", "ingest_records"]

PARALLEL_MIN_BYTES = 8 << 20  # below this, starting worker processes costs more than it saves
CHUNK_LINES = 2_000


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
    run_id = store.start_run("ingest", {"paths": [s.path for s in sources], "format": fmt})
    job = _Job(store, run_id, settings)
    total = sum(s.size for s in sources if s.kind == "jsonl") or None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=None if progress is None else not progress)
    try:
        for source in sources:
            job.run(source, fmt, bar.update)
        job.flush()
    except BaseException:
        job.close()
        store.finish_run(run_id, "failed", job.summary())
        raise
    finally:
        bar.close()
    job.close()
    summary = job.summary()
    store.finish_run(run_id, "done", summary)
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
    run_id = store.start_run("ingest", {"source": source})
    job = _Job(store, run_id, settings)
    items = (Item(source, i, orjson.dumps(r, default=str), r) for i, r in enumerate(records, 1))
    job.run_items(items, "auto", source)
    job.flush()
    job.close()
    summary = job.summary()
    store.finish_run(run_id, "done", summary)
    return summary


class _Job:
    """One ingest run: validates items, batches inserts (one transaction per batch), writes the quarantine."""

    def __init__(self, store: Store, run_id: str, settings: IngestSettings):
        self.store = store
        self.run_id = run_id
        self.batch_size = settings.batch_size
        self.workers = settings.workers
        self.limits = Limits(settings.max_messages, settings.max_chars, settings.user_salt)
        self.counts = dict(read=0, ingested=0, duplicates=0, quarantined=0, conversations=0, feedback_events=0)
        self.pending: list[tuple[Conversation, str]] = []
        self.events: list[tuple[dict, tuple[str, int]]] = []
        self.quarantine_path = store.quarantine_dir / f"ingest-{run_id}.jsonl"
        self._quarantine: IO[bytes] | None = None

    def run(self, source: Source, fmt: str, on_bytes) -> None:  # noqa: ANN001
        if source.kind == "jsonl" and self.workers > 1 and source.size >= PARALLEL_MIN_BYTES:
            lines = jsonl_lines(source.path, on_bytes)
            first = next(lines, None)
            if first is None:
                return
            lines = _chain(first, lines)
            if not (fmt == "oasst" or classify(parse_line(source.path, *first).obj) == "oasst"):
                self._run_parallel(source.path, lines, fmt)
                return
            self.run_items((parse_line(source.path, n, raw) for n, raw in lines), fmt, source.path)
            return
        self.run_items(read(source, on_bytes if source.kind == "jsonl" else None), fmt, source.path)

    def run_items(self, items: Iterable[Item], fmt: str, source: str) -> None:
        items = iter(items)
        first = next(items, None)
        if first is None:
            return
        items = _chain(first, items)
        if fmt == "oasst" or (fmt in ("auto", "parquet", "hf") and classify(first.obj) == "oasst"):
            for threads, rejected, n_read in oasst.conversations(items, self.limits):
                self.counts["read"] += n_read
                for item, reason in rejected:
                    self.reject(item, reason)
                for conv in threads:
                    self.pending.append((conv, source))
                self._maybe_flush()
            return
        for item in items:
            self._take(source, item.line, item.raw, *parse_item(item, fmt, self.limits))

    def _run_parallel(self, path: str, lines, fmt: str) -> None:  # noqa: ANN001
        """Validate chunks of lines in worker processes while this one writes batches; at most a few chunks in flight."""
        import concurrent.futures as cf
        import multiprocessing as mp
        from collections import deque

        # fork where the OS has it: workers start at once and share the parent's imported modules
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context(method)) as pool:
            window: deque = deque()
            chunk: list[tuple[int, bytes]] = []
            for entry in _chain_end(lines):
                if entry is not None:
                    chunk.append(entry)
                if chunk and (len(chunk) >= CHUNK_LINES or entry is None):
                    window.append(pool.submit(parse_chunk, path, fmt, self.limits, chunk))
                    chunk = []
                while window and (len(window) > 2 * self.workers or entry is None):
                    for number, raw, kind, payload in window.popleft().result():
                        self._take(path, number, raw, kind, payload)

    def _take(self, source: str, line: int, raw: bytes | None, kind: str, payload: Any) -> None:
        self.counts["read"] += 1
        if kind == "conv":
            payload.lines = (line,)
            self.pending.append((payload, source))
        elif kind == "event":
            self.events.append((payload, (source, line)))
        else:
            self.reject(Item(source, line, raw or b""), payload)
        self._maybe_flush()

    def reject(self, item: Item, reason: str) -> None:
        self.counts["quarantined"] += 1
        if self._quarantine is None:
            self._quarantine = open(self.quarantine_path, "ab")
        entry = {"file": item.source, "line": item.line, "reason": reason, "raw": item.raw.decode("utf-8", "backslashreplace")}
        self._quarantine.write(orjson.dumps(entry) + b"\n")

    def _maybe_flush(self) -> None:
        if len(self.pending) + len(self.events) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending batch in one transaction; duplicates (already stored or repeated) are counted, not written."""
        if not self.pending and not self.events:
            return
        now = utcnow()
        batch: dict[str, tuple[Conversation, str]] = {}
        for conv, source in self.pending:  # a repeat inside the batch is a duplicate of the first
            batch.setdefault(conv.row["id"], (conv, source))
        events = {}
        for row, _where in self.events:
            events.setdefault(row["id"], row)
        with self.store.begin() as conn:
            stored = existing_ids(conn, conversations.c.id, list(batch))
            new = [(c, s) for cid, (c, s) in batch.items() if cid not in stored]
            rows = [{**c.row, "source": s, "run_id": self.run_id, "ingested_at": now} for c, s in new]
            insert_rows(conn, conversations, rows)
            fb_rows = [{**f, "run_id": self.run_id} for c, _ in batch.values() for f in c.feedback]
            fb_rows += [{**row, "run_id": self.run_id} for row in events.values()]
            known_fb = existing_ids(conn, feedback.c.id, [f["id"] for f in fb_rows]) if fb_rows else set()
            fb_new = [f for f in {f["id"]: f for f in fb_rows}.values() if f["id"] not in known_fb]
            insert_rows(conn, feedback, fb_new)
        new_ids = {c.row["id"] for c, _ in new}
        ingested_lines = {(s, line) for c, s in new for line in c.lines}
        seen_lines = {(s, line) for c, s in self.pending for line in c.lines}
        event_new = {row["id"] for row in fb_new}
        for row, where in self.events:
            if row["id"] in event_new:
                ingested_lines.add(where)
                event_new.discard(row["id"])
            seen_lines.add(where)
        self.counts["ingested"] += len(ingested_lines)
        self.counts["duplicates"] += len(seen_lines - ingested_lines)
        self.counts["conversations"] += len(new_ids)
        self.counts["feedback_events"] += len(fb_new)
        self.pending.clear()
        self.events.clear()

    def close(self) -> None:
        if self._quarantine is not None:
            self._quarantine.close()

    def summary(self) -> dict[str, Any]:
        return {
            **{k: self.counts[k] for k in ("read", "ingested", "duplicates", "quarantined")},
            "quarantine_file": str(self.quarantine_path) if self.counts["quarantined"] else None,
            "conversations": self.counts["conversations"],
            "feedback_events": self.counts["feedback_events"],
            "run_id": self.run_id,
        }


def _chain(first, rest):  # noqa: ANN001, ANN202
    yield first
    yield from rest


def _chain_end(items):  # noqa: ANN001, ANN202
    """The items, then None to mark the end."""
    yield from items
    yield None
