"""The collect writer on SQLite: no commit checkpoints the WAL, a thread beside the writer does. SQLite's automatic
checkpoint runs inside whichever commit crosses 1,000 WAL pages and waits for the disk; at 500 requests/s it held
every acknowledgement for 20–85 ms several times a second (docs/performance.md, curate collect)."""
from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import orjson

from curation.collect.writer import CHECKPOINT_EVERY, Collector, Unit
from curation.ingest.parse import parse_item
from curation.ingest.readers import Item
from curation.ingest.records import Limits


def wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, frames already copied into the database) from the WAL index (the -shm file), read without
    checkpointing: mxFrame at byte 16 of its header, nBackfill at byte 96 (sqlite.org/walformat.html)."""
    shm = Path(f"{db}-shm").read_bytes()
    return struct.unpack_from("=I", shm, 16)[0], struct.unpack_from("=I", shm, 96)[0]


def test_commits_leave_the_wal_to_the_checkpoint_thread(tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_DATABASE_URL", raising=False)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    collector = Collector(home)
    collector.start()
    try:
        with collector._store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
        for n in range(200):  # 200 commits: far fewer than the 1,000 pages that start an automatic checkpoint
            record = {"id": f"r-{n}", "messages": [{"role": "user", "content": f"q{n}" * 50},
                                                   {"role": "assistant", "content": f"a{n}"}]}
            raw = orjson.dumps(record)
            parsed = parse_item(Item("collect", n, raw, record), "auto", Limits())
            done = threading.Event()
            collector.submit(Unit(otel=False, apply=lambda job, n=n, raw=raw, parsed=parsed: job.take(
                "collect", n, raw, *parsed), spool=lambda record=record: [record], size=len(raw),
                done=lambda outcome: done.set()))
            assert done.wait(30)
        deadline = time.monotonic() + 10 * CHECKPOINT_EVERY
        frames, copied = wal_frames(home / "curate.db")
        while copied < frames and time.monotonic() < deadline:
            time.sleep(CHECKPOINT_EVERY / 2)
            frames, copied = wal_frames(home / "curate.db")
        assert frames > 0 and copied == frames, (frames, copied)
    finally:
        summary = collector.close()
    assert summary["store_ingested"] == 200 and summary["acknowledged_store"] == 200
