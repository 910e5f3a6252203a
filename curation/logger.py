"""Production logging: call from the app that serves the model. It never blocks the caller and never raises.

Records go onto an in-memory queue; a background thread writes them to the store in batches. When the store cannot
be written, the batch is appended to a spool JSONL file instead (mode 0600, in a 0700 folder), which
`curate ingest SPOOL` loads later with nothing lost (records and feedback events are both valid ingest input).

    logger = ConversationLogger()
    cid = logger.log(messages, model="my-model-v3", user_id=user.id)
    logger.feedback(cid, "thumbs_down")
"""
from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

from curation.config import resolve_home
from curation.home import ensure_home, open_private, private_dir
from curation.ingest.records import content_hash

log = logging.getLogger("curate.logger")
_STOP = object()


class ConversationLogger:
    """Buffered, background writer of conversations and feedback events."""

    def __init__(self, home: str | os.PathLike | None = None, url: str | None = None, batch_size: int = 500,
                 flush_interval: float = 1.0, max_queue: int = 100_000, spool: str | os.PathLike | None = None):
        self.home = resolve_home(home)
        self.url = url
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.spool_path = Path(spool) if spool else self.home / "spool" / f"logger-{os.getpid()}.jsonl"
        self.written = 0
        self.spooled = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._spool_lock = threading.Lock()
        self._store = None
        self._thread = threading.Thread(target=self._run, name="curate-logger", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def log(self, messages: list[dict], id: str | None = None, model: str | None = None,
            user_id: str | None = None, session_id: str | None = None, metadata: dict | None = None,
            created_at: str | None = None, feedback: list[dict] | None = None) -> str:
        """Queue one conversation; returns its id (the given one, else the content hash ingest would use).
        `created_at` defaults to now (UTC, ISO 8601), as a feedback event's `at` does."""
        try:
            conv_id = id or content_hash(messages)
            record = {"id": conv_id, "messages": messages, "model": model, "user_id": user_id,
                      "session_id": session_id, "metadata": metadata, "created_at": created_at or _now(),
                      "feedback": feedback}
            self._put({k: v for k, v in record.items() if v is not None})
            return conv_id
        except Exception:  # logging must never break the serving app
            log.exception("curate: could not queue a conversation")
            return id or ""

    def feedback(self, conversation_id: str, type: str, value: Any = None, turn: int | None = None,
                 at: str | None = None) -> None:
        """Queue a feedback event (thumbs_down, rating, regenerated, edited, comment, …) for a logged conversation."""
        event = {"conversation_id": conversation_id, "type": type, "value": value, "turn": turn, "at": at or _now()}
        self._put({k: v for k, v in event.items() if v is not None})

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until everything queued so far is written (or spooled)."""
        done = threading.Event()
        self._put(done)
        done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._put(_STOP)
            self._thread.join(timeout=30)

    def _put(self, item: Any) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the writer is far behind: spool right here rather than block or drop
            if isinstance(item, dict):
                self._spool([item])

    def _run(self) -> None:
        batch: list[dict] = []
        while True:
            try:
                item = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                item = None
            if isinstance(item, dict):
                batch.append(item)
                if len(batch) < self.batch_size:
                    continue
            if batch:
                self._write(batch)
                batch = []
            if isinstance(item, threading.Event):
                item.set()
            elif item is _STOP:
                return

    def _write(self, batch: list[dict]) -> None:
        try:
            from curation.ingest import ingest_records
            from curation.store import Store

            if self._store is None:
                self._store = Store.open(self.home, self.url)
            ingest_records(self._store, batch, source="logger")
            self.written += len(batch)
        except Exception as exc:  # the store is down or full: keep the data on local disk
            log.warning("curate: store unavailable (%s); spooling %d records to %s", _reason(exc), len(batch),
                        self.spool_path)
            self._store = None
            self._spool(batch)

    def _spool(self, batch: list[dict]) -> None:
        try:
            with self._spool_lock:
                folder = self.spool_path.parent
                if folder.parent == self.home:  # HOME/spool: the home and the folder are private, like the store
                    ensure_home(self.home)
                folder.parent.mkdir(parents=True, exist_ok=True)
                private_dir(folder)
                with open_private(self.spool_path) as out:
                    out.write(b"".join(orjson.dumps(r, default=str) + b"\n" for r in batch))
                self.spooled += len(batch)
        except Exception:
            log.exception("curate: could not spool %d records", len(batch))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


_default: ConversationLogger | None = None
_default_lock = threading.Lock()


def default_logger() -> ConversationLogger:
    """The process-wide `ConversationLogger` (home from $CURATE_HOME), created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ConversationLogger()
    return _default


def log_conversation(messages: list[dict], **kwargs: Any) -> str:
    """Log one conversation through the process-wide `ConversationLogger`."""
    return default_logger().log(messages, **kwargs)


def log_feedback(conversation_id: str, type: str, **kwargs: Any) -> None:
    """Attach a feedback event to a conversation logged earlier."""
    default_logger().feedback(conversation_id, type, **kwargs)


def _reason(exc: BaseException) -> str:
    """The driver's one-line reason, never the statement: SQLAlchemy's message carries the SQL and its parameters,
    which are the users' conversations."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:200] if lines else ''}"
