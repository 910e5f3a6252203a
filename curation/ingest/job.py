"""One ingest run (`IngestJob`): reads sources, validates records (in worker processes for a big JSONL file),
batches them to the writer thread, counts every record read and writes the quarantine."""
from __future__ import annotations

import itertools
import logging
import threading
from typing import IO, Any, Iterable

import orjson
import sqlalchemy as sa

from curation.config import IngestSettings
from curation.home import open_private
from curation.ingest import oasst, otel
from curation.ingest.parse import parse_chunk, parse_item
from curation.ingest.readers import Item, Source, jsonl_lines, parse_line, read
from curation.ingest.records import Conversation, Limits, classify
from curation.ingest.writer import (COLUMNS, FB_COLUMNS, BatchWriter, conflict_record, find_conflicts,
                                    insert_threads)
from curation.store import Store, existing_ids, insert_tuples, utcnow
from curation.store.tables import conversations, feedback

PARALLEL_MIN_BYTES = 8 << 20  # below this, starting worker processes costs more than it saves
CHUNK_LINES = 2_000
log = logging.getLogger("curate.ingest")


class IngestJob:
    """One ingest run: validates items, batches inserts (one transaction per batch), writes the quarantine.

    Counting: a one-line conversation is ingested when its insert adds a row (the driver's rowcount says how many
    did), so the hot path never asks the database which ids it holds. An oasst thread accounts for several lines and
    a feedback event line for one feedback row; those ask first, because a line counts once whichever row it is in.
    """

    def __init__(self, store: Store, run_id: str, settings: IngestSettings, writer=BatchWriter):
        """`writer(connect, write)` runs the batches: by default in a thread of its own, so that the next batch is
        parsed meanwhile; `curate collect`, whose parsing is elsewhere already, writes in the calling thread."""
        self.store = store
        self.run_id = run_id
        self.batch_size = settings.batch_size
        self.workers = settings.workers
        self.limits = Limits(settings.max_messages, settings.max_chars, settings.user_salt)
        self.counts = dict(read=0, ingested=0, duplicates=0, quarantined=0, conflicts=0, conversations=0, feedback_events=0,
                           feedback_waiting=0)
        self.rows: list[tuple] = []  # one-line conversations, as conversation rows ready to insert
        self.lines: list[int] = []  # the line (or record number) each row came from
        self.feedback: list[tuple] = []  # their feedback rows
        self.fb_start: list[int] = []  # where each row's feedback begins in `feedback`
        self.threads: list[tuple[Conversation, tuple]] = []  # conversations over several lines (oasst), with their tail
        self.events: list[tuple[tuple, tuple[str, int]]] = []  # standalone feedback events and where they came from
        self.quarantine_path = store.quarantine_dir / f"ingest-{run_id}.jsonl"
        self._quarantine: IO[bytes] | None = None
        self._quarantine_lock = threading.Lock()  # the writer thread quarantines conflicts
        self.truncated: list[dict] = []
        self._tails: dict[str, tuple] = {}
        self._writer = writer(store.bulk_connection, self._write)

    def _tail(self, source: str) -> tuple:
        """The values every conversation row of this batch from `source` ends with (source, run_id, ingested_at)."""
        tail = self._tails.get(source)
        if tail is None:
            tail = self._tails[source] = (source, self.run_id, utcnow())
        return tail

    def run(self, source: Source, fmt: str, on_bytes) -> None:
        if source.kind == "jsonl" and self.workers > 1 and source.size >= PARALLEL_MIN_BYTES:
            lines = jsonl_lines(source.path, on_bytes, self._damaged(source.path))
            first = next(lines, None)
            if first is None:
                return
            lines = itertools.chain([first], lines)
            if not (fmt == "oasst" or classify(parse_line(source.path, *first).obj) == "oasst"):
                self._run_parallel(source.path, lines, fmt)
                return
            self.run_items((parse_line(source.path, n, raw) for n, raw in lines), fmt, source.path)
            return
        self.run_items(read(source, on_bytes if source.kind == "jsonl" else None, self._damaged(source.path)),
                       fmt, source.path)

    def _damaged(self, path: str):
        """What the reader calls when a file breaks off: the lost rest is one quarantined record, the run is partial."""
        def damaged(line: int, reason: str) -> None:
            self.counts["read"] += 1
            self.reject(Item(path, line, b""), reason)
            self.truncated.append({"file": path, "line": line, "reason": reason})
            log.warning("curate: %s: %s", path, reason)

        return damaged

    def run_otel(self, sources: list[Source], on_bytes) -> dict[str, int]:
        """OTLP/JSON trace files: one record per GenAI span; returns the counts of what was skipped."""
        reader = otel.Reader(self.limits)
        for found in reader.conversations(sources, on_bytes, self._damaged):
            self.take_found(*found)
        return {"skipped_spans": reader.skipped_spans, "skipped_records": reader.skipped_records}

    def take_found(self, found: list[tuple[Conversation, str, int]], rejected: list[tuple[Item, str]], n_read: int) -> None:
        """What otel.Reader found in one export request: conversations to write, spans to quarantine."""
        self.counts["read"] += n_read
        for item, reason in rejected:
            self.reject(item, reason)
        for conv, path, line in found:
            if len(conv.lines) == 1:  # one span: a stored id with other content is a conflict, as in other formats
                self._add_row(path, line, conv)
            else:
                self.threads.append((conv, self._tail(path)))
        self._maybe_flush()

    def run_items(self, items: Iterable[Item], fmt: str, source: str) -> None:
        items = iter(items)
        first = next(items, None)
        if first is None:
            return
        items = itertools.chain([first], items)
        if fmt == "oasst" or (fmt in ("auto", "parquet", "hf") and classify(first.obj) == "oasst"):
            for threads, rejected, n_read in oasst.conversations(items, self.limits):
                self.counts["read"] += n_read
                for item, reason in rejected:
                    self.reject(item, reason)
                for conv in threads:
                    self.threads.append((conv, self._tail(source)))
                self._maybe_flush()
            return
        for item in items:
            self.take(source, item.line, item.raw, *parse_item(item, fmt, self.limits))

    def _run_parallel(self, path: str, lines, fmt: str) -> None:
        """Validate chunks of lines in worker processes while this one writes batches; at most a few chunks in flight."""
        import concurrent.futures as cf
        import multiprocessing as mp
        from collections import deque

        # fork where the OS has it: workers start at once and share the parent's imported modules
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context(method)) as pool:
            window: deque = deque()
            chunk: list[tuple[int, bytes]] = []
            for entry in itertools.chain(lines, [None]):  # None marks the end
                if entry is not None:
                    chunk.append(entry)
                if chunk and (len(chunk) >= CHUNK_LINES or entry is None):
                    window.append(pool.submit(parse_chunk, path, fmt, self.limits, chunk))
                    chunk = []
                while window and (len(window) > 2 * self.workers or entry is None):
                    for number, raw, kind, payload in window.popleft().result():
                        self.take(path, number, raw, kind, payload)

    def take(self, source: str, line: int, raw: bytes | None, kind: str, payload: Any) -> None:
        self.counts["read"] += 1
        if kind == "conv":
            self._add_row(source, line, payload)
        elif kind == "event":
            self.events.append((payload, (source, line)))
        else:
            self.reject(Item(source, line, raw or b""), payload)
        self._maybe_flush()

    def _add_row(self, source: str, line: int, conv: Conversation) -> None:
        self.rows.append(conv.row + self._tail(source))
        self.lines.append(line)
        self.fb_start.append(len(self.feedback))
        if conv.feedback:
            self.feedback.extend(conv.feedback)

    def reject(self, item: Item, reason: str, **extra: Any) -> None:
        entry = {"file": item.source, "line": item.line, "reason": reason, "raw": item.raw.decode("utf-8", "backslashreplace"),
                 **extra}
        with self._quarantine_lock:
            self.counts["quarantined"] += 1
            if self._quarantine is None:
                self._quarantine = open_private(self.quarantine_path)
            self._quarantine.write(orjson.dumps(entry) + b"\n")

    def _maybe_flush(self) -> None:
        if len(self.rows) + len(self.threads) + len(self.events) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Hand the pending batch to the writer; each batch is written in one transaction."""
        if not (self.rows or self.threads or self.events):
            return
        self._writer.submit((self.rows, self.lines, self.feedback, self.fb_start, self.threads, self.events))
        self.rows, self.lines, self.feedback, self.fb_start, self.threads, self.events = [], [], [], [], [], []
        self._tails.clear()

    def _write(self, conn: sa.Connection, batch: tuple) -> None:
        """Writer thread: one batch, one transaction; duplicates (already stored or repeated) are counted, not written,
        and conflicts (a repeated id with other content) are quarantined once the batch is committed."""
        rows, lines, fb, fb_start, threads, events = batch
        run = (self.run_id,)
        with conn.begin():
            ingested, duplicates, new_threads = insert_threads(conn, threads)
            added = insert_tuples(conn, conversations, COLUMNS, rows)  # after the threads: a repeat is a duplicate
            # only a batch with repeats pays for reading rows back: every row not added has a stored twin
            conflicts = find_conflicts(conn, rows) if added < len(rows) else []
            ingested += added
            duplicates += len(rows) - added - len(conflicts)
            held: dict[int, list[tuple]] = {}
            if conflicts:  # a conflicting record's feedback is about its own content: it goes to the quarantine too
                ends = fb_start[1:] + [len(fb)]
                held = {i: fb[fb_start[i] : ends[i]] for i, _, _ in conflicts}
                lost = {j for i in held for j in range(fb_start[i], ends[i])}
                fb = [row for j, row in enumerate(fb) if j not in lost]
            fb_rows = [row + run for row in fb]
            fb_rows += [row + run for conv, _ in threads for row in conv.feedback]
            new_feedback = insert_tuples(conn, feedback, FB_COLUMNS, fb_rows)
            # an event line is ingested when its row is new: not stored before, and not repeated earlier in the batch
            known = existing_ids(conn, feedback.c.id, [row[0] for row, _ in events]) if events else set()
            fresh = []
            for row, _where in events:
                if row[0] in known:
                    duplicates += 1
                else:
                    known.add(row[0])
                    fresh.append(row)
            ingested += len(fresh)
            new_feedback += insert_tuples(conn, feedback, FB_COLUMNS, [row + run for row, _ in events])
            # an event may come before its conversation (a feedback file ingested first): it is kept, and it is the
            # conversation's once that arrives; until then it is counted as waiting
            about = existing_ids(conn, conversations.c.id, list({row[1] for row in fresh})) if fresh else set()
            waiting = sum(1 for row in fresh if row[1] not in about)
        self.counts["ingested"] += ingested
        self.counts["duplicates"] += duplicates
        self.counts["conversations"] += added + new_threads
        self.counts["feedback_events"] += new_feedback
        self.counts["feedback_waiting"] += waiting
        for i, stored, new in conflicts:
            row = rows[i]
            self.counts["conflicts"] += 1
            self.reject(Item(row[COLUMNS.index("source")], lines[i], conflict_record(row, held[i])),
                        f"conflict: id {row[0]!r} is stored already with other content (stored content {stored}, this "
                        f"record {new}); give this record an id of its own, or leave 'id' out to use its content hash",
                        conflict={"id": row[0], "stored": stored, "new": new})

    def commit(self) -> None:
        """Write what is pending and wait until it is committed, keeping the job open (`curate collect` acknowledges
        after this); raises what the writer raised."""
        self.flush()
        self._writer.wait()

    def finish(self) -> None:
        """Write what is pending and wait until every batch is committed; raises what the writer raised."""
        self.flush()
        self._writer.close()
        self.close()

    def close(self) -> None:
        """Stop once the batches already handed to the writer are written (as whole transactions, like the ones
        before them); what the writer raised was raised by `finish` already, or the run is failing anyway."""
        self._writer.close(raise_error=False)
        if self._quarantine is not None:
            self._quarantine.close()

    def summary(self) -> dict[str, Any]:
        return {
            **{k: self.counts[k] for k in ("read", "ingested", "duplicates", "quarantined")},
            "quarantine_file": str(self.quarantine_path) if self.counts["quarantined"] else None,
            "conflicts": self.counts["conflicts"],
            "conversations": self.counts["conversations"],
            "feedback_events": self.counts["feedback_events"],
            "feedback_waiting": self.counts["feedback_waiting"],  # new events whose conversation is not stored yet
            **({"truncated": self.truncated} if self.truncated else {}),
            "run_id": self.run_id,
        }
