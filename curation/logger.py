"""Production logging: call from the app that serves the model. It never blocks the caller and never raises.

Records go onto an in-memory queue. A sender thread serialises them and hands them over a pipe to a writer process
(`curation.log_writer`), which writes them to the store in batches and spools what the store refuses; the app's
threads only ever wait for the GIL as long as one record takes to serialise, not for a batch's validation and
insert. Where no process can be started (`process=False`, or no Python to start), the same writer runs in a thread.

    logger = ConversationLogger()
    cid = logger.log(messages, model="my-model-v3", user_id=user.id)
    logger.feedback(cid, "thumbs_down")
"""
from __future__ import annotations

import atexit
import datetime as dt
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import orjson

from curation.config import resolve_home
from curation.ingest.records import content_hash
from curation.log_writer import LogWriter, store_reason
from curation.spool import Spool, fallback_dirs

__all__ = ["ConversationLogger", "default_logger", "log_conversation", "log_feedback", "store_reason"]
log = logging.getLogger("curate.logger")
_STOP = object()
_PIPE_BYTES = 1 << 16  # what the sender hands over in one write
_GATHER = 0.02  # seconds the sender waits between hand-overs


class ConversationLogger:
    """Buffered, background writer of conversations and feedback events.

    `written`, `spooled` and `lost` count records (conversations and feedback events) that reached the store, a
    spool file, or nowhere; they are current after `flush()` and `close()`. `max_pending` bounds the records kept in
    memory while neither store nor spool takes them. `process=False` writes from a thread of this process instead.
    """

    def __init__(self, home: str | os.PathLike | None = None, url: str | None = None, batch_size: int = 500,
                 flush_interval: float = 1.0, max_queue: int = 100_000, spool: str | os.PathLike | None = None,
                 spool_fallbacks: Iterable[str | os.PathLike] | None = None, max_pending: int = 100_000,
                 retry_interval: float = 5.0, process: bool = True):
        self.home = resolve_home(home)
        self.url = url
        path = Path(spool) if spool else self.home / "spool" / f"logger-{os.getpid()}.jsonl"
        fallbacks = [str(d) for d in (fallback_dirs() if spool_fallbacks is None else spool_fallbacks)]
        self.spool = Spool(path, fallbacks)
        self._settings = {"home": str(self.home), "url": url, "spool": str(path), "spool_fallbacks": fallbacks,
                          "batch_size": batch_size, "flush_interval": flush_interval, "max_queue": max_queue,
                          "max_pending": max_pending, "retry_interval": retry_interval}
        self._counts = [0, 0, 0]  # written, spooled, lost: the writer process's last report
        self._here = [0, 0, 0]  # the same, for records this process had to handle itself
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._flushes: dict[int, threading.Event] = {}
        self._numbers = itertools.count()
        self._ready = threading.Event()  # the writer process started (or ended before it did)
        self._started = False  # it said it is ready
        self._received = threading.Event()  # the writer process's output ended
        self._sent = 0  # records handed to the writer process
        self._closed = False
        self._writer: LogWriter | None = None  # the writer in this process, if there is no writer process
        self._child = self._start_child() if process else None
        if self._child is None:
            self._writer = LogWriter(**self._settings)
        else:
            self._reader = threading.Thread(target=self._receive, name="curate-logger-reader", daemon=True)
            self._reader.start()
            self._sender = threading.Thread(target=self._send, name="curate-logger-sender", daemon=True)
            self._sender.start()
        atexit.register(self.close)

    @property
    def spool_path(self) -> Path:
        """The spool file this logger writes first (`spool.files()` lists every file it wrote)."""
        return self.spool.path

    @property
    def written(self) -> int:
        return self._count(0)

    @property
    def spooled(self) -> int:
        return self._count(1)

    @property
    def lost(self) -> int:
        return self._count(2)

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id; None when the writer runs in this process."""
        return self._child.pid if self._child is not None and self._writer is None else None

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
        """Wait until everything queued so far is written (or spooled, or held in memory for a retry)."""
        if self._closed:
            return
        done = threading.Event()
        if self._child is None:
            self._writer.put(done)
        else:
            self._queue.put(done, timeout=timeout)
        done.wait(timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Write what is queued, retry what is held in memory once more, and stop; what is still unwritten is lost."""
        if self._closed:
            return
        self._closed = True
        if self._child is not None:
            self._queue.put(_STOP)
            self._sender.join(timeout)
            try:
                self._child.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("curate: the logger's writer process %d still writes after %g s; it goes on alone",
                            self._child.pid, timeout)
            self._received.wait(5)
        if self._writer is not None:
            self._writer.close()

    def _count(self, index: int) -> int:
        writer = self._writer
        mine = (writer.written, writer.spooled, writer.lost)[index] if writer is not None else 0
        return self._counts[index] + self._here[index] + mine

    def _put(self, item: dict) -> None:
        if self._child is None:
            self._writer.put(item)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # the writer is far behind: spool right here rather than block or drop
            try:
                self.spool.append([item])
                self._here[1] += 1
            except Exception as exc:
                self._here[2] += 1
                log.error("curate: LOST 1 logged record: the logger's queue is full and the spool refused it (%s)", exc)

    def _start_child(self) -> subprocess.Popen | None:
        if not Path(sys.executable).name.startswith("python"):  # embedded (uwsgi, …): no interpreter to start
            return None
        source = str(Path(__file__).resolve().parent.parent)  # the child imports the same curation
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
        settings = {**self._settings, "log_level": logging.getLogger("curate.logger").getEffectiveLevel()}
        try:
            return subprocess.Popen([sys.executable, "-c", "from curation.log_writer import main; main()",
                                     orjson.dumps(settings).decode()],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:
            log.warning("curate: could not start the logger's writer process (%s); writing from a thread", exc)
            return None

    def _send(self) -> None:
        """Serialise queued records, one short GIL hold each, and write them to the writer process in large pieces
        (the write releases the GIL). Once that process is gone, what was not handed over goes to a writer here."""
        fd = self._child.stdin.fileno()
        self._ready.wait()
        if not self._started:  # it could not start: nothing was handed over, nothing is lost
            self._take_over([])
        while True:
            items = [self._queue.get()]
            while items[-1] is not _STOP and len(items) < 1000:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with_records = []
            data = []
            for item in items:
                if isinstance(item, dict):
                    try:
                        data.append(orjson.dumps(item, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n")
                    except TypeError as exc:  # circular, or nested past orjson's depth: no place could take it
                        self._here[2] += 1
                        log.error("curate: LOST 1 logged record: it cannot be written as JSON (%s)", exc)
                        continue
                    with_records.append(item)
                elif isinstance(item, threading.Event):
                    number = next(self._numbers)
                    self._flushes[number] = item
                    data.append(b"F%d\n" % number)
                else:
                    data.append(b"S\n")
            try:
                if self._writer is not None:
                    raise BrokenPipeError
                _write_all(fd, b"".join(data))
                self._sent += len(with_records)
            except OSError:
                self._take_over(items)
            if items[-1] is _STOP:
                if self._writer is None:
                    self._child.stdin.close()
                return
            # let records gather: woken for each one, this thread would take the GIL from the app's threads
            # hundreds of times a second, each time perhaps in the middle of a call the app is timing
            time.sleep(_GATHER)

    def _take_over(self, items: list[Any]) -> None:
        """The writer process died: write from here on, and count what it took but never confirmed as lost."""
        if self._writer is None:
            self._writer = LogWriter(**self._settings)
            unconfirmed = self._sent - sum(self._counts)
            self._here[2] += unconfirmed
            self._child.wait()
            if not self._started:
                log.warning("curate: the logger's writer process could not start (exit code %s); writing from a "
                            "thread of this process", self._child.returncode)
            else:
                log.error("curate: the logger's writer process %d ended (exit code %s); LOST %d records it had not "
                          "confirmed; writing from a thread of this process from now on", self._child.pid,
                          self._child.returncode, unconfirmed)
        for item in items:
            if item is not _STOP:
                self._writer.put(item)
        for event in list(self._flushes.values()):
            if not any(event is item for item in items):  # those wait for the writer here
                event.set()
        self._flushes.clear()

    def _receive(self) -> None:
        try:
            for line in self._child.stdout:
                message = orjson.loads(line)
                if "counts" in message:
                    self._counts = message["counts"]
                if "ready" in message:
                    self._started = True
                    self._ready.set()
                if "flushed" in message and message["flushed"] in self._flushes:
                    self._flushes.pop(message["flushed"]).set()
                if "log" in message:
                    log.log(message["log"][0], "%s", message["log"][1])
        finally:
            self._child.stdout.close()
            self._ready.set()  # ended before it was ready: the sender finds the pipe closed and takes over
            self._received.set()
            for event in list(self._flushes.values()):
                event.set()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:_PIPE_BYTES]):]


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
