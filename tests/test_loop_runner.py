"""The loop runner: the lock (busy, dead holder), resuming after a failure or kill -9, partial runs, loop files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from curation.errors import ConfigError
from loops.loop.config import LoopConfig, load
from loops.loop.lock import LoopBusy, LoopLock
from loops.loop.runner import run_loop
from loops.loop.tables import loop_locks, loop_runs

import loop_steps_fixture as fx  # tests/ is on sys.path under pytest's rootdir conftest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def loop_env(tmp_path, monkeypatch):
    env = {"LOOP_LOG": tmp_path / "log.txt", "LOOP_GATE": tmp_path / "gate", "LOOP_FAIL": tmp_path / "fail"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    env["LOOP_GATE"].touch()
    return env


def calls(env) -> list[str]:
    path = env["LOOP_LOG"]
    return path.read_text().split() if path.exists() else []


def start_holder(home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "loop_steps_fixture.py"), str(home)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_failed_step_resumes_without_redoing_finished_steps(store, loop_env):
    loop_env["LOOP_FAIL"].touch()
    first = run_loop(store, LoopConfig(), steps=fx.STEPS)
    assert first["status"] == "failed" and first["steps"]["flaky"]["status"] == "failed"
    assert "failed on purpose" in first["steps"]["flaky"]["message"]
    assert first["steps"]["last"]["status"] == "pending"
    loop_env["LOOP_FAIL"].unlink()
    second = run_loop(store, LoopConfig(), steps=fx.STEPS)
    assert second["run_id"] == first["run_id"] and second["resumed"] and second["status"] == "done"
    assert calls(loop_env) == ["first", "slow-start", "slow", "flaky", "last"]
    third = run_loop(store, LoopConfig(), steps=fx.STEPS)  # a finished run is not resumed: a new one starts
    assert third["run_id"] != first["run_id"] and not third["resumed"]


def test_a_run_that_keeps_failing_is_given_up_after_three_attempts(store, loop_env):
    loop_env["LOOP_FAIL"].touch()
    attempts = [run_loop(store, LoopConfig(), steps=fx.STEPS) for _ in range(3)]
    assert {a["run_id"] for a in attempts} == {attempts[0]["run_id"]} and attempts[1]["resumed"]
    fresh = run_loop(store, LoopConfig(), steps=fx.STEPS)  # new data must not wait behind a broken run forever
    assert fresh["run_id"] != attempts[0]["run_id"] and not fresh["resumed"] and fresh["status"] == "failed"
    assert calls(loop_env).count("first") == 2


def test_kill_9_mid_step_then_rerun_resumes_that_step(home, store, loop_env):
    loop_env["LOOP_GATE"].unlink()
    proc = start_holder(home)
    wait_for(lambda: "slow-start" in calls(loop_env))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with store.connect() as conn:
        assert conn.execute(sa.select(loop_runs.c.status)).scalar_one() == "running"
        assert conn.execute(sa.select(loop_locks.c.pid)).scalar_one() == proc.pid  # the dead holder's lock
    loop_env["LOOP_GATE"].touch()
    result = run_loop(store, LoopConfig(), steps=fx.STEPS)
    assert result["status"] == "done" and result["resumed"]
    assert calls(loop_env) == ["first", "slow-start", "slow-start", "slow", "flaky", "last"]  # `first` ran once
    with store.connect() as conn:
        assert conn.execute(sa.select(loop_runs.c.attempts)).scalar_one() == 2
        assert conn.execute(sa.select(sa.func.count()).select_from(loop_locks)).scalar_one() == 0


def test_second_concurrent_run_exits_75_naming_the_run(home, store, loop_env, cli):
    loop_env["LOOP_GATE"].unlink()
    proc = start_holder(home)
    try:
        wait_for(lambda: "slow-start" in calls(loop_env))
        with store.connect() as conn:
            holder = conn.execute(sa.select(loop_locks.c.run_id)).scalar_one()
        result = cli("loop", "run", "--json", code=75)
        assert holder in result.stderr and "already running" in result.stderr
        assert '"status":"busy"' in result.stdout
        with pytest.raises(LoopBusy):
            run_loop(store, LoopConfig(), steps=fx.STEPS)
    finally:
        loop_env["LOOP_GATE"].touch()
        out, err = proc.communicate(timeout=120)
    assert out.decode().strip() == "done", err.decode()[-2000:]


def test_lock_held_by_another_host_is_stale_only_after_its_heartbeat_expires(store):
    other = LoopLock(store, "nightly", "run-a")
    other.acquire()
    with store.begin() as conn:
        conn.execute(loop_locks.update().values(host="elsewhere", heartbeat_at="2000-01-01T00:00:00.000000Z"))
    other._stop.set()
    taker = LoopLock(store, "nightly", "run-b", stale_after=60)
    taker.acquire()  # the holder's heartbeat is decades old: taken over
    with store.connect() as conn:
        assert conn.execute(sa.select(loop_locks.c.run_id)).scalar_one() == "run-b"
    with pytest.raises(LoopBusy):
        LoopLock(store, "nightly", "run-c").acquire()  # run-b is alive (this process)
    taker.release()


def test_unreachable_service_makes_the_run_partial(store, loop_env):
    steps = [("first", fx.first), ("push", fx.unreachable), ("last", fx.last)]
    result = run_loop(store, LoopConfig(), steps=steps)
    assert result["status"] == "partial"
    assert result["steps"]["push"]["status"] == "skipped" and result["steps"]["push"]["message"].startswith("unreachable")
    assert calls(loop_env) == ["first", "last"]


@pytest.mark.parametrize("text, message", [
    ("[embed]\nmodle = 'x'", "unknown key 'embed.modle'; allowed here: model, backend, view"),
    ("[annotate]\nbudget = 'lots'", "'annotate.budget' must be an integer"),
    ("[train]\nloss = 'hinge'", "'train.loss' = 'hinge' is not allowed; choose one of bt, margin-bt"),
    ("[cluster]\nk = 'many'", "'cluster.k' must be \"auto\" or an integer"),
    ("[export]\nrules = ['ratings', 'z']", "'export.rules' may only contain ratings, preference, rewrite, feedback"),
    ("budget = 3", "unknown key 'budget'"),
])
def test_loop_file_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "loop.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        load(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_shipped_nightly_file_is_valid():
    config = load(REPO / "loops" / "nightly.toml")
    assert config.name == "nightly" and config.sources.paths == ["{home}/incoming"]


def test_the_train_trigger_never_counts_negative_new_pairs(store):
    """The README tour trains on its export (46 training pairs); the loop that follows exports the same ratings with
    a larger test split (41): that is no new pairs, which the skip reason said as "-5 new training pairs"."""
    from loops import registry
    from loops.loop import steps
    from loops.loop.context import RunContext, StepSkipped

    registry.register(store, store.home / "rm", None, "bt", "v1", {"train_pairs": 46})
    ctx = RunContext(store, LoopConfig(), "run-1", figures={"export": {"pairs": 49, "train": 41}})
    with pytest.raises(StepSkipped) as skipped:
        steps.train(ctx)
    assert str(skipped.value) == ("not triggered: 0 new training pairs (41 exported for training; the largest "
                                  "training set so far had 46) < train.min_new_pairs = 200")
