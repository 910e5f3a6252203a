"""The ingest writer: batches written in a second thread, one transaction each, with duplicates and conflicts told
apart by content."""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

import orjson
import sqlalchemy as sa

from curation.ingest.records import CONVERSATION_COLUMNS, FEEDBACK_COLUMNS, Conversation, content_hash
from curation.store import among, existing_ids, insert_tuples, loads
from curation.store.tables import conversations

COLUMNS = CONVERSATION_COLUMNS + ("source", "run_id", "ingested_at")
FB_COLUMNS = FEEDBACK_COLUMNS + ("run_id",)
CONTENT = slice(1, 7)  # messages … metadata in a conversation row: what decides whether a repeated id is a duplicate


class BatchWriter:
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


def insert_threads(conn, threads: list[tuple[Conversation, tuple]]) -> tuple[int, int, int]:
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


def find_conflicts(conn, rows: list[tuple]) -> list[tuple[int, str, str]]:
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


def conflict_record(row: tuple, feedback: list[tuple]) -> bytes:
    """A conflicting record as it was parsed, for the quarantine (its user id is kept only as a hash, so not here)."""
    fields = dict(zip(CONVERSATION_COLUMNS, row))
    events = [{k: v for k, v in zip(("type", "value", "turn", "at"), (f[2], loads(f[3]), f[4], f[5])) if v is not None}
              for f in feedback]
    record = {"id": fields["id"], "messages": loads(fields["messages"]), "model": fields["model"],
              "created_at": fields["created_at"], "session_id": fields["session_id"],
              "metadata": loads(fields["metadata"]), "feedback": events or None}
    return orjson.dumps({k: v for k, v in record.items() if v is not None})
