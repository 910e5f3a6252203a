"""Fault test: `kill -9` at a seeded random point of a random step of a loop run, then the same command again.

Ten trials. Each starts from the same state (day 1 ingested, pushed and rated by simulated annotators), runs the
loop on day 2 with ratings to pull, exports, trains, gates, and is killed once mid-way. After the rerun, the store
and the Argilla dataset must equal those of an uninterrupted run: same ids, no duplicates, no lost ratings.
SQLite only: copying a PostgreSQL base state per trial is out of scope; the lock and resume logic this relies on
is tested on both backends in test_loop_runner.py.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa

from curation.synthetic import write_jsonl

TRIALS = int(os.environ.get("CURATE_FAULT_TRIALS", "10"))
SEED = 20261127
LOOP = """name = "faults"
[sources]
paths = ["{home}/incoming"]
[annotate]
dataset = "fault-test"
workspace = "faults"
budget = 24
min_submitted = 1
[export]
test_size = 0.3
[train]
min_new_pairs = 4
epochs = 1.0
max_length = 64
"""
TABLES = {  # table: the columns that identify its rows, and the values that must match
    "conversations": "SELECT id FROM conversations",
    "feedback": "SELECT id FROM feedback",
    "embeddings": "SELECT space_id, conversation_id FROM embeddings",
    "cluster_assignments": "SELECT conversation_id, cluster_id, novel FROM cluster_assignments",
    "failure_scores": "SELECT conversation_id, ROUND(failure_score, 6) FROM failure_scores",
    "annotation_records": "SELECT record_id, conversation_id FROM annotation_records",
    "rating_responses": "SELECT id, status, helpfulness, correctness, coherence, complexity, verbosity, rewrite FROM rating_responses",
    "ratings": "SELECT record_id, n_annotators, helpfulness, disagreement FROM ratings",
    "reward_models": "SELECT loss FROM reward_models",
    "promotions": "SELECT decision FROM promotions",
}

# SQLite pass only (see conftest): the trials copy a SQLite base state. Embeds with the default backend: `make test`
# runs it once per int8 backend (onnx, openvino).
pytestmark = [pytest.mark.slow, pytest.mark.embeds]


def _run(home: Path, env: dict, timeout: float = 900) -> dict:
    done = subprocess.run([sys.executable, "-m", "curation.cli.main", "loop", "run", "--config", str(home / "loop.toml"),
                           "--json", "--home", str(home)], env=env, capture_output=True, timeout=timeout)
    assert done.returncode in (0, 3), done.stderr.decode()[-3000:]
    return orjson.loads(done.stdout)


def _server(home: Path):
    from annotations.server import start_background

    server = start_background(home, api_key="faults.apikey.123", owner_password="faults-password")
    env = {**os.environ, "ARGILLA_API_URL": server.url, "ARGILLA_API_KEY": server.api_key, "CURATE_HOME": str(home)}
    env.pop("CURATE_DATABASE_URL", None)
    return server, env


def _snapshot(home: Path, server) -> dict:
    engine = sa.create_engine(f"sqlite:///{home / 'curate.db'}")
    state = {}
    with engine.connect() as conn:
        for name, query in TABLES.items():
            rows = [tuple(r) for r in conn.execute(sa.text(query))]
            state[name] = sorted(rows, key=repr)
        exports = conn.execute(sa.text("SELECT pairs, train, test FROM preference_exports ORDER BY id")).all()
    engine.dispose()
    state["last_export"] = tuple(exports[-1]) if exports else None
    api = httpx.Client(base_url=server.url, headers={"X-Argilla-Api-Key": server.api_key}, timeout=60)
    dataset = next(d for d in api.get("/api/v1/me/datasets").json()["items"] if d["name"] == "fault-test")
    records = api.get(f"/api/v1/datasets/{dataset['id']}/records", params={"limit": 1000, "include": "responses"}).json()["items"]
    state["argilla_records"] = sorted(r["external_id"] for r in records)
    state["argilla_responses"] = sorted((r["external_id"], resp["user_id"], resp["status"]) for r in records for resp in r.get("responses") or [])
    return state


def _last_run_status(home: Path) -> str:
    engine = sa.create_engine(f"sqlite:///{home / 'curate.db'}")
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM loop_runs ORDER BY started_at DESC LIMIT 1")).scalar()
    engine.dispose()
    return status


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Day 1 through the loop, rated by simulated annotators; then day 2 waiting in incoming/."""
    from curation.store import Store
    from loops.simulate import simulate

    home = tmp_path_factory.mktemp("fault-base") / "home"
    home.mkdir()
    (home / "loop.toml").write_text(LOOP)
    write_jsonl(home / "incoming" / "day-1.jsonl", 120, seed=31, siblings=0.3)
    server, env = _server(home)
    try:
        first = _run(home, env)
        assert first["status"] == "done", first
        simulate(Store.open(home), server.url, server.api_key, "fault-test", "faults", seed=1)
    finally:
        server.stop()
    write_jsonl(home / "incoming" / "day-2.jsonl", 40, seed=32, siblings=0.3, id_prefix="day2")
    return home


def _trial_home(base: Path, where: Path) -> Path:
    home = where / "home"
    shutil.copytree(base, home)
    (home / "loop.toml").write_text(LOOP)
    # the watermark remembers absolute paths: the copy's files are new to it, so point them back at the copy's own
    import sqlite3

    db = sqlite3.connect(home / "curate.db")
    db.execute("UPDATE loop_files SET path = replace(path, ?, ?)", (str(base), str(home)))
    db.commit()
    db.close()
    return home


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory):
    home = _trial_home(base, tmp_path_factory.mktemp("fault-reference"))
    server, env = _server(home)
    try:
        summary = _run(home, env)
        assert summary["status"] == "done" and summary["steps"]["train"]["status"] == "done", summary["steps"]
        durations = {name: step["seconds"] or 0.0 for name, step in summary["steps"].items()}
        return _snapshot(home, server), durations
    finally:
        server.stop()


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill_9_anywhere_then_rerun_equals_uninterrupted(base, reference, tmp_path, trial):
    expected, durations = reference
    rng = random.Random(SEED + trial)
    step = rng.choice(list(durations))
    delay = rng.uniform(0, durations[step])
    home = _trial_home(base, tmp_path)
    server, env = _server(home)
    try:
        cmd = [sys.executable, "-m", "curation.cli.main", "loop", "run", "--config", str(home / "loop.toml"), "--json"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        engine = sa.create_engine(f"sqlite:///{home / 'curate.db'}")
        deadline = time.time() + 900
        while True:  # wait for the chosen step to start (or the run to end first)
            with engine.connect() as conn:
                state = conn.execute(sa.text("SELECT s.status FROM loop_steps s JOIN loop_runs r ON r.id = s.run_id "
                                             "WHERE r.status = 'running' AND s.step = :step"), {"step": step}).scalar()
            if state in ("running", "done", "skipped", "failed") or proc.poll() is not None:
                break
            assert time.time() < deadline
            time.sleep(0.02)
        engine.dispose()
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        if killed and _last_run_status(home) != "done":  # the same command again resumes the run
            final = _run(home, env)
            assert final["status"] == "done" and final["resumed"], final["steps"]
        elif killed:  # the kill landed after the run had recorded its end, while the process was exiting
            assert _last_run_status(home) == "done"
        else:  # the run ended before the kill landed: nothing to resume
            assert orjson.loads(out)["status"] == "done", err.decode()[-2000:]
        got = _snapshot(home, server)
    finally:
        server.stop()
    for key in expected:
        assert got[key] == expected[key], f"trial {trial}: killed in {step} after {delay:.2f}s; {key} differs"
