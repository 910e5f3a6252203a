"""curation.spool: durable appends, private folders, fallbacks, a size limit, and sealing files for a drain."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import orjson
import pytest

from curation.spool import Spool, SpoolFull, SpoolUnavailable


def lines(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_append_creates_private_folders_and_file(tmp_path):
    old = os.umask(0o022)
    try:
        spool = Spool(tmp_path / "a" / "b" / "spool.jsonl")
        where = spool.append([{"id": "1"}, {"id": "2"}])
        spool.append([{"id": "3"}])
    finally:
        os.umask(old)
    assert where == spool.path == spool.last_path
    assert [r["id"] for r in lines(where)] == ["1", "2", "3"]
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700 and mode(where) == 0o600
    assert spool.files() == [where] and spool.size_bytes() == where.stat().st_size


def test_unwritable_folder_falls_back_and_no_location_raises(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    spool = Spool(blocker / "spool.jsonl", fallback_dirs=[tmp_path / "fallback"])
    where = spool.append([{"id": "1"}])
    assert where == tmp_path / "fallback" / "spool.jsonl" and spool.files() == [where]
    nowhere = Spool(blocker / "spool.jsonl", fallback_dirs=[blocker / "also"])
    with pytest.raises(SpoolUnavailable, match="not-a-folder"):
        nowhere.append([{"id": "2"}])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another user")
def test_a_shared_fallback_folder_of_another_user_is_not_used(tmp_path):
    theirs = tmp_path / "shared" / "spool"
    theirs.mkdir(parents=True)
    os.chown(theirs, 65534, 65534)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    spool = Spool(blocker / "spool.jsonl", fallback_dirs=[theirs, tmp_path / "mine"])
    assert spool.append([{"id": "1"}]) == tmp_path / "mine" / "spool.jsonl"
    assert not (theirs / "spool.jsonl").exists()


def test_max_bytes_raises_spool_full_and_writes_nothing(tmp_path):
    spool = Spool(tmp_path / "spool.jsonl", max_bytes=100)
    spool.append([{"id": "1", "text": "x" * 40}])
    before = spool.size_bytes()
    with pytest.raises(SpoolFull, match="limit is 100"):
        spool.append([{"id": "2", "text": "x" * 40}])
    assert spool.size_bytes() == before


def test_a_write_cut_short_leaves_no_partial_line(tmp_path):
    # a file size limit (RLIMIT_FSIZE) makes write() fail part way, as a full disk does
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(os.getcwd())!r})
from curation.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
spool = Spool({str(tmp_path / "spool.jsonl")!r}, fallback_dirs=[{str(tmp_path / "fallback")!r}])
print(spool.append([{{"id": "a", "text": "x" * 600}}]))
print(spool.append([{{"id": "b", "text": "y" * 300}}, {{"id": "c", "text": "z" * 300}}]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split()
    assert first == str(tmp_path / "spool.jsonl") and second == str(tmp_path / "fallback" / "spool.jsonl")
    assert [r["id"] for r in lines(tmp_path / "spool.jsonl")] == ["a"]  # cut back to the last whole line
    assert [r["id"] for r in lines(tmp_path / "fallback" / "spool.jsonl")] == ["b", "c"]


def test_seal_hands_over_closed_files_while_appends_go_on(tmp_path):
    spool = Spool(tmp_path / "logger-1.jsonl", fallback_dirs=[tmp_path / "fb"])
    Spool(tmp_path / "logger-12.jsonl").append([{"id": "other logger"}])  # a name that shares a prefix
    assert spool.seal() == []
    spool.append([{"id": "1"}])
    sealed = spool.seal()
    assert len(sealed) == 1 and sealed[0] != spool.path and [r["id"] for r in lines(sealed[0])] == ["1"]
    spool.append([{"id": "2"}])
    assert spool.files() == [sealed[0], spool.path]
    sealed[0].unlink()
    assert [r["id"] for r in lines(spool.path)] == ["2"] and spool.size_bytes() == spool.path.stat().st_size
