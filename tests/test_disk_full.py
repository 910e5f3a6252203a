"""A full disk is one line naming the disk, not a traceback; a rerun after freeing space is exact (issue 22).

The disk is a real tmpfs of a few MiB mounted for the test (root only), grown afterwards with `mount -o remount`.
"""
from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from conftest import tmpfs
import sqlalchemy as sa

from curation.disk import disk_full_message

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "3m") as mount:
        yield mount


def curate(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CURATE_DATABASE_URL"}  # the store in the home
    return subprocess.run([sys.executable, "-m", "curation.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**env, "PYTHONPATH": REPO})


def test_ingest_onto_a_full_disk_says_so_in_one_line_and_a_rerun_is_exact(small_disk, tmp_path):
    traffic = tmp_path / "traffic.jsonl"
    with open(traffic, "wb") as out:
        for i in range(3_000):  # ~4 MB of conversations: more than the 3 MiB disk
            out.write(orjson.dumps({"id": f"c{i}", "messages": [
                {"role": "user", "content": f"question {i} " + "words " * 100},
                {"role": "assistant", "content": f"answer {i} " + "more " * 100}]}) + b"\n")
    home = small_disk / "home"
    full = curate("ingest", traffic, "--home", home, "--json")
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert "Traceback" not in full.stderr and len(lines) == 1, full.stderr
    assert lines[0].startswith("error: the disk is full") and str(small_disk) in lines[0]

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = curate("ingest", traffic, "--home", home, "--json")
    assert again.returncode == 0, again.stderr
    engine = sa.create_engine(f"sqlite:///{home / 'curate.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM conversations").scalar_one() == 3_000
    engine.dispose()

    with open(small_disk / "filler", "wb") as filler:  # fill what is left but 512 KiB, where the store opens
        with pytest.raises(OSError):
            while True:
                filler.write(b"\0" * (64 << 10))
                filler.flush()
    os.truncate(small_disk / "filler", os.path.getsize(small_disk / "filler") - (512 << 10))
    export = curate("export", "conversations", "--out", small_disk / "out.jsonl", "--home", home)
    assert export.returncode == 1 and "Traceback" not in export.stderr
    assert export.stderr.startswith(f"error: the disk is full: writing {small_disk / 'out.jsonl'}"), export.stderr


def test_the_message_is_found_through_wrapping_exceptions():
    import sqlite3

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise sa.exc.OperationalError("INSERT …", {}, inner) from inner
    except sa.exc.OperationalError as outer:
        assert disk_full_message(RuntimeError("writer thread failed")) is None
        wrapped = RuntimeError("the ingest writer failed")
        wrapped.__cause__ = outer
        found = disk_full_message(wrapped, "/var/lib/curate/curate.db")
    assert found.startswith("the disk is full: writing the SQLite store /var/lib/curate/curate.db (file system /")
    assert disk_full_message(OSError(28, "No space left on device", "/x/y")).startswith("the disk is full: writing /x/y")
