"""`curate collect` when things go wrong: the store locked by another process, a full spool, SIGTERM and kill -9
in the middle of a stream. Every acknowledged record must end in the store, or in the spool until the store is back.

SQLite only: "the store is down" is its file locked by another process (BEGIN EXCLUSIVE), which works without
stopping a shared server.
"""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.test_collect import collecting, post, stored

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("CURATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@contextlib.contextmanager
def locked(home: Path):
    """The store's SQLite file held under an exclusive lock by another process until the block ends."""
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(home / "curate.db")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"locked"
        yield
    finally:
        proc.stdin.close()
        proc.wait(30)


def record(n: int) -> dict:
    return {"id": f"r-{n}", "messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]}


def spooled_ids(home: Path) -> list[str]:
    ids = []
    for path in (home / "spool").glob("collect-*.jsonl"):
        with contextlib.suppress(FileNotFoundError):  # sealed or drained meanwhile
            ids += [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]  # the JSON API's records
    return ids


def wait_for(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_locked_store_spools_then_drains_and_a_full_spool_answers_429(home):
    with collecting(home, "--store-timeout", "0.2", "--max-spool", "250") as (proc, url):
        assert post(f"{url}/v1/conversations", orjson.dumps(record(0)))[0] == 200
        with locked(home):
            code, _, body = post(f"{url}/v1/conversations", orjson.dumps([record(1), record(2)]))
            assert code == 200 and orjson.loads(body)["durable"] == "spool"
            assert sorted(spooled_ids(home)) == ["r-1", "r-2"]
            code, headers, body = post(f"{url}/v1/conversations", orjson.dumps(record(3)))
            assert code == 429 and headers["retry-after"] == "5" and b"spool is full" in body
        wait_for(lambda: not spooled_ids(home))  # drained once the lock is gone
        assert post(f"{url}/v1/conversations", orjson.dumps(record(3)))[0] == 200
    assert proc.returncode == 0
    assert sorted(stored(home)) == ["r-0", "r-1", "r-2", "r-3"]
    assert not list((home / "spool").glob("collect-*"))


class Stream:
    """Threads posting batches of new records until stopped or refused; `acked` holds what got a 2xx."""

    def __init__(self, url: str, threads: int = 2, batch: int = 20):
        self.url, self.batch = url, batch
        self.acked: set[str] = set()
        self.stop = threading.Event()
        self._next = iter(range(10**9))
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                records = [record(next(self._next)) for _ in range(self.batch)]
            try:
                code, _, _ = post(f"{self.url}/v1/conversations", orjson.dumps(records))
            except OSError:
                return  # the server is gone
            if code == 200:
                with self._lock:
                    self.acked.update(r["id"] for r in records)

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)


def test_sigterm_answers_what_is_in_flight_writes_it_and_exits(home):
    with collecting(home) as (proc, url):
        stream = Stream(url)
        wait_for(lambda: len(stream.acked) >= 200)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        stream.join()
    summary = orjson.loads(proc.stdout.read())
    got = set(stored(home))
    assert stream.acked <= got and summary["store_ingested"] == len(got)


def test_kill_9_mid_stream_loses_nothing_acknowledged(home):
    with collecting(home, "--store-timeout", "0.2") as (proc, url):
        stream = Stream(url)
        wait_for(lambda: len(stream.acked) >= 100)
        with locked(home):  # part of the stream goes to the spool
            before = len(stream.acked)
            wait_for(lambda: len(stream.acked) >= before + 100)
            proc.kill()
            proc.wait(30)
        stream.join()
    in_spool = spooled_ids(home)
    assert in_spool, "the stream should have reached the spool while the store was locked"
    assert stream.acked <= set(stored(home)) | set(in_spool)
    with collecting(home) as (proc, url):  # a new collect drains the spool of the process that died
        wait_for(lambda: not spooled_ids(home))
    assert stream.acked <= set(stored(home))
