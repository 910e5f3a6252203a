"""Faults under the embedded annotation server (issue 22): a full disk under argilla.db is HTTP 507 that says so
and one line in the server's log, reads go on, nothing acknowledged is lost, and writes work again once space is
freed. The disk is a real tmpfs of a few MiB mounted for the test (root only)."""
from __future__ import annotations

import errno
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from conftest import tmpfs

from annotations.template import ATTRIBUTES
from benchmarks.annotators import PENDING, make_team, setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = {attribute: {"value": 3} for attribute in ATTRIBUTES}


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "40m") as mount:
        yield mount


def fill(path) -> None:
    """Write `path` until the file system has no byte left."""
    with open(path, "wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def serve(home, port: int, api_key: str, log) -> subprocess.Popen:
    """`curate annotate serve` for `home`, its log on another disk (the home's disk is the one that fills)."""
    env = {**os.environ, "ARGILLA_API_KEY": api_key, "CURATE_ANNOTATE_OWNER_PASSWORD": secrets.token_hex(8),
           "PYTHONPATH": REPO}
    process = subprocess.Popen([sys.executable, "-m", "annotations.server", "serve", "--home", str(home),
                                "--port", str(port), "--log-level", "info"], stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/me", headers={"X-Argilla-Api-Key": api_key},
                         timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start")


@pytest.mark.slow
def test_a_full_disk_under_the_server_is_a_507_that_says_so_and_nothing_acknowledged_is_lost(small_disk, tmp_path):
    from annotations.client import AnnotationError, connect
    from annotations.server.settings import free_port

    home, api_key = small_disk / "home", "team." + secrets.token_hex(8)
    server, dataset_id, _ = setup(home, 40, 1, free_port(), api_key)
    server.stop()
    port, db_path = free_port(), home / "argilla" / "argilla.db"
    with open(tmp_path / "server.log", "wb") as log:
        process = serve(home, port, api_key, log)
    url = f"http://127.0.0.1:{port}"
    try:
        (_, token), = make_team(url, api_key, 1, secrets.token_hex(8))
        annotator = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        records = [item["record"]["id"] for item in annotator.post(
            f"/api/v1/me/datasets/{dataset_id}/records/search?limit=40",
            json={"query": {}, "filters": {"and": PENDING}}).raise_for_status().json()["items"]]

        def submit(record: str) -> httpx.Response:
            return annotator.post(f"/api/v1/records/{record}/responses",
                                  json={"values": VALUES, "status": "submitted"})

        acked = [r for r in records[:3] if submit(r).status_code == 201]
        assert len(acked) == 3
        # An empty write-ahead log, so the next commit has to grow a file on the full disk.
        with sqlite3.connect(db_path) as db:
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        fill(small_disk / "filler")

        answers = [submit(r) for r in records[3:8]]
        assert {a.status_code for a in answers} == {507}, [(a.status_code, a.text[:200]) for a in answers]
        assert "the annotation server's disk is full" in answers[0].json()["detail"]
        assert str(small_disk) not in answers[0].text  # no server path to the client
        # Reads go on.
        assert annotator.post(f"/api/v1/me/datasets/{dataset_id}/records/search?limit=1",
                              json={"query": {}, "filters": {"and": PENDING}}).status_code == 200
        # Curate's client stops at once with the server's words, instead of retrying as if the server were down.
        with pytest.raises(AnnotationError, match="disk is full"):
            connect(url, api_key, retries=6).request("POST", f"/api/v1/records/{records[8]}/responses",
                                                     json={"values": VALUES, "status": "submitted"})

        os.remove(small_disk / "filler")
        again = submit(records[3])
        assert again.status_code == 201, again.text
        acked.append(records[3])
    finally:
        process.terminate()
        process.wait(60)
    text = (tmp_path / "server.log").read_text(errors="replace")
    full = [line for line in text.splitlines() if "the disk is full" in line]
    assert len(full) == 1 and str(db_path) in full[0] and str(small_disk) in full[0], text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    with sqlite3.connect(db_path) as db:
        stored = {row[0] for row in db.execute("SELECT record_id FROM responses")}
    assert {uuid.UUID(r).hex for r in acked} <= stored
    assert uuid.UUID(records[4]).hex not in stored  # refused: nothing of it was kept
