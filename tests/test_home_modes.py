"""The Curate home is private: created 0700, its store, quarantine and spool files 0600, and a warning for an open one."""
from __future__ import annotations

import logging
import os
import stat
import threading

import pytest

from curation import ConversationLogger
from curation.ingest import ingest
from curation.store import Store
from tests.test_ingest import write_lines


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def usual_umask():
    old = os.umask(0o022)  # the common default, under which plain open() and mkdir() give 0644 and 0755
    yield
    os.umask(old)


@pytest.fixture
def warnings_once(monkeypatch):
    import curation.home

    monkeypatch.setattr(curation.home, "_warned", threading.Event())  # as in a new process


def test_store_creates_a_private_home_database_and_quarantine(home, database_url, tmp_path, usual_umask):
    assert not home.exists()
    store = Store.open(home)
    try:
        assert mode(home) == 0o700
        if database_url is None:  # SQLite: the database and its WAL files hold every conversation
            db = home / "curate.db"
            present = [p for p in (db, home / "curate.db-wal", home / "curate.db-shm") if p.exists()]
            assert len(present) == 3
            assert {p.name: mode(p) for p in present} == {p.name: 0o600 for p in present}
        summary = ingest(store, [write_lines(tmp_path / "bad.jsonl", [b"{not json"])])
        assert mode(home / "quarantine") == 0o700 and mode(summary["quarantine_file"]) == 0o600
    finally:
        store.dispose()


def test_logger_spool_is_private(home, usual_umask):
    logger = ConversationLogger(home, url="postgresql+psycopg://curate@127.0.0.1:1/curate", batch_size=1, flush_interval=0.05)
    logger.log([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    logger.flush()
    logger.close()
    assert logger.spooled == 1
    assert mode(home) == 0o700 and mode(logger.spool_path.parent) == 0o700 and mode(logger.spool_path) == 0o600


def test_an_existing_open_home_is_kept_and_warned_about_once(home, caplog, usual_umask, warnings_once):
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    with caplog.at_level(logging.WARNING, logger="curate"):
        for _ in range(3):
            Store.open(home).dispose()
    warned = [r.getMessage() for r in caplog.records if "open to other users" in r.getMessage()]
    assert len(warned) == 1 and str(home) in warned[0] and "chmod 700" in warned[0] and "0755" in warned[0]
    assert mode(home) == 0o755  # a shared home stays shared: Curate says so, it does not change it


def test_a_private_home_is_not_warned_about(home, caplog, warnings_once):
    home.mkdir(mode=0o700)
    with caplog.at_level(logging.WARNING, logger="curate"):
        Store.open(home).dispose()
    assert not [r for r in caplog.records if "open to other users" in r.getMessage()]
