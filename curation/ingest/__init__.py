"""Ingest conversation logs into the store: streaming, batched, idempotent, with a quarantine for bad records.

Every record read is accounted for: `read == ingested + duplicates + quarantined`. For the oasst tree format a
record is one message, placed in one or more threads or quarantined. A record whose `id` is stored already is a
duplicate when its content is the same, and a conflict (quarantined, naming both content hashes) when it is not.
The unreadable rest of a truncated .gz file counts as one quarantined record, and its run ends "partial".
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
from pathlib import Path
from typing import IO, Any, Iterable

import orjson
import sqlalchemy as sa
from tqdm import tqdm

from curation.config import IngestSettings
from curation.errors import StrictModeError
from curation.home import open_private
from curation.ingest import oasst, otel
from curation.ingest.readers import Item, Source, expand, jsonl_lines, parse_line, read
from curation.ingest.parse import parse_chunk, parse_item
from curation.ingest.records import CONVERSATION_COLUMNS, FEEDBACK_COLUMNS, Conversation, Limits, classify, content_hash
from curation.store import Store, among, existing_ids, insert_tuples, loads, utcnow
from curation.store.tables import conversations, feedback

__all__ = ["IngestJob", "ingest", "ingest_records"]

PARALLEL_MIN_BYTES = 8 << 20  # below this, starting worker processes costs more than it saves
CHUNK_LINES = 2_000
COLUMNS = CONVERSATION_COLUMNS + ("source", "run_id", "ingested_at")
FB_COLUMNS = FEEDBACK_COLUMNS + ("run_id",)
CONTENT = slice(1, 7)  # messages … metadata in a conversation row: what decides whether a repeated id is a duplicate
log = logging.getLogger("curate.ingest")


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
    job = IngestJob(store, run_id, settings)
    total = sum(s.size for s in sources if s.kind == "jsonl") or None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=None if progress is None else not progress)
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
        store.finish_run(run_id, "failed", job.summary())
        raise
    finally:
        bar.close()
    summary = {**job.summary(), **extra}
    store.finish_run(run_id, "partial" if job.truncated else "done", summary)
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
    job = IngestJob(store, run_id, settings)
    items = (Item(source, i, orjson.dumps(r, default=str), r) for i, r in enumerate(records, 1))
    try:
        job.run_items(items, "auto", source)
        job.finish()
    finally:
        job.close()
    summary = job.summary()
    store.finish_run(run_id, "done", summary)
    return summary


class IngestJob:
    """One ingest run: validates items, batches inserts (one transaction per batch), writes the quarantine.

    Counting: a one-line conversation is ingested when its insert adds a row (the driver's rowcount says how many
    did), so the hot path never asks the database which ids it holds. An oasst thread accounts for several lines and
    a feedback event line for one feedback row; those ask first, because a line counts once whichever row it is in.
    """

    def __init__(self, store: Store, run_id: str, settings: IngestSettings):
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
        self._writer = _Writer(store.bulk_connection, self._write)

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
            lines = _chain(first, lines)
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
        items = _chain(first, items)
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
            for entry in _chain_end(lines):
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
            ingested, duplicates, new_threads = _insert_threads(conn, threads)
            added = insert_tuples(conn, conversations, COLUMNS, rows)  # after the threads: a repeat is a duplicate
            # only a batch with repeats pays for reading rows back: every row not added has a stored twin
            conflicts = _conflicts(conn, rows) if added < len(rows) else []
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
            self.reject(Item(row[COLUMNS.index("source")], lines[i], _record(row, held[i])),
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


class _Writer:
    """Runs `write(conn, batch)` on each submitted batch in a second thread, at most `depth` batches waiting; `conn`
    comes from `connect()`, opened in that thread on the first batch and held until the end.

    The SQLite and PostgreSQL drivers release the GIL while the database works (and SQLite's commit waits on the
    disk), so on two cores the next batch is parsed while this one is written. Batches are written in order.
    """

    def __init__(self, connect, write, depth: int = 2):
        self._connect = connect
        self._write = write
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="curate-ingest-writer", daemon=True)
        self._thread.start()

    def submit(self, batch: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def wait(self) -> None:
        """Wait until the batches submitted so far are written; then raise the error, if any."""
        done = threading.Event()
        self._queue.put(done)
        done.wait()
        if self._error is not None:
            raise self._error

    def close(self, raise_error: bool = True) -> None:
        """Wait until the submitted batches are written (after an error, the rest are skipped); then raise the error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None and raise_error:
            error, self._error = self._error, None
            raise error

    def _loop(self) -> None:
        with contextlib.ExitStack() as stack:
            conn = None
            while (batch := self._queue.get()) is not None:
                if isinstance(batch, threading.Event):  # wait(): everything before it is written
                    batch.set()
                elif self._error is None:
                    try:
                        conn = conn or stack.enter_context(self._connect())
                        self._write(conn, batch)
                    except BaseException as exc:  # handed to the ingesting thread, which raises it
                        self._error = exc


def _insert_threads(conn, threads: list[tuple[Conversation, tuple]]) -> tuple[int, int, int]:
    """Insert the pending multi-line conversations; (lines ingested, lines duplicate, conversations added)."""
    if not threads:
        return 0, 0, 0
    stored = existing_ids(conn, conversations.c.id, [conv.id for conv, _ in threads])
    new: dict[str, tuple] = {}
    seen_lines: set[tuple[str, int]] = set()
    ingested_lines: set[tuple[str, int]] = set()
    for conv, tail in threads:  # a repeat inside the batch is a duplicate of the first
        lines = {(tail[0], line) for line in conv.lines}
        seen_lines |= lines
        if conv.id not in stored and conv.id not in new:
            new[conv.id] = conv.row + tail
            ingested_lines |= lines
    insert_tuples(conn, conversations, COLUMNS, list(new.values()))
    return len(ingested_lines), len(seen_lines - ingested_lines), len(new)


def _conflicts(conn, rows: list[tuple]) -> list[tuple[int, str, str]]:
    """(index, stored content hash, its content hash) of each row whose id is stored with other content."""
    stored: dict[str, tuple] = {}
    ids = list({row[0] for row in rows})
    columns = [conversations.c[name] for name in COLUMNS[CONTENT]]
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        stored.update((r[0], tuple(r[1:])) for r in conn.execute(
            sa.select(conversations.c.id, *columns).where(among(conversations.c.id, chunk, conn))))
    found = []
    for i, row in enumerate(rows):
        twin = stored.get(row[0])
        if twin is None or row[CONTENT] == twin:  # the same text: the row just added, or a true duplicate
            continue
        new, old = _content(row[0], row[CONTENT]), _content(row[0], twin)
        if new != old:
            found.append((i, old, new))
    return found


def _content(conv_id: str, content: tuple) -> str:
    """A hash of what a conversation says, whatever the key order of its JSON: messages, model, created_at, session
    and metadata; the hashed user is left out (it changes with the salt). An id that is the hash of its messages
    was derived from them, so the messages alone decide."""
    messages, model, created_at, session_id, _user, metadata = content
    messages = loads(messages)
    if conv_id == content_hash(messages):
        return content_hash(messages)
    return content_hash(messages, model, created_at, session_id, loads(metadata))


def _record(row: tuple, feedback: list[tuple]) -> bytes:
    """A conflicting record as it was parsed, for the quarantine (its user id is kept only as a hash, so not here)."""
    fields = dict(zip(CONVERSATION_COLUMNS, row))
    events = [{k: v for k, v in zip(("type", "value", "turn", "at"), (f[2], loads(f[3]), f[4], f[5])) if v is not None}
              for f in feedback]
    record = {"id": fields["id"], "messages": loads(fields["messages"]), "model": fields["model"],
              "created_at": fields["created_at"], "session_id": fields["session_id"],
              "metadata": loads(fields["metadata"]), "feedback": events or None}
    return orjson.dumps({k: v for k, v in record.items() if v is not None})


def _chain(first, rest):
    yield first
    yield from rest


def _chain_end(items):
    """The items, then None to mark the end."""
    yield from items
    yield None
