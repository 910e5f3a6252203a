"""`curate loop status` while a run holds the lock, and after kill -9 left the lock behind: when monitoring matters."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from loops.loop.lock import LoopLock

REPO = Path(__file__).resolve().parent.parent

# A scheduler's process that takes the loop's lock the way the runner does, then is killed mid-run.
HOLDER = """
import sys, time
from curation.store import Store
from loops.loop.lock import LoopLock
LoopLock(Store.open(sys.argv[1]), "nightly", "run-killed").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_status_json_while_a_run_holds_the_lock(cli, store):
    lock = LoopLock(store, "nightly", "run-live")
    lock.acquire()
    try:
        status = cli.json("loop", "status")
        human = cli("loop", "status").stdout
    finally:
        lock.release()
    [held] = status["running"]
    assert held["run_id"] == "run-live" and held["pid"] == os.getpid() and held["stale"] is False
    assert all(type(key) is str for key in held)
    assert f"in progress: run run-live (pid {os.getpid()}" in human


def test_status_json_after_kill_9_reports_the_stale_lock(cli, store, home):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(home)], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().decode().strip() == "held", proc.stderr.read().decode()[-2000:]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    status = cli.json("loop", "status")
    [held] = status["running"]
    assert held["run_id"] == "run-killed" and held["pid"] == proc.pid and held["stale"] is True
    human = cli("loop", "status").stdout
    assert "stale lock: run run-killed" in human and "resumes" in human
