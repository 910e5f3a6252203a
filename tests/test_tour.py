"""The README's five-minute tour, run exactly as written, end to end, in a fresh home.

The tour's bash block is taken from README.md and run by bash, with `curate` from .venv/bin, in a scratch folder
that links `.venv` and `loops` to the repository (the tour runs from the repository root and writes traffic.jsonl,
report.html, prefs/ and rm/ there). Only two things differ from a reader's shell: CURATE_HOME is a fresh temporary
folder instead of /tmp/tour, and CURATE_ANNOTATE_PORT (documented in docs/annotation-server.md) puts
`curate annotate serve &` on a free port, since 6900 may be taken on a shared machine. People do not rate here: the
tour's own `curate annotate simulate` line does. Every command must exit 0; the background server is stopped at
the end. What the tour printed is kept in test-artifacts/tour.log.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def tour_block() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## A five-minute tour"):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_tour_block_is_found_and_has_no_placeholders():
    block = tour_block()
    assert "curate annotate simulate --dataset failures" in block and "loops/nightly.toml" in block
    assert not re.search(r"\b(VERSION|NAME|ID)\b", block)  # copy-pasteable: nothing to fill in


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    from annotations.server.settings import free_port

    block = tour_block()
    assert block.count("/tmp/tour") == 1
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    for name in (".venv", "loops"):
        (work / name).symlink_to(REPO / name)
    # -e: any command that fails stops the tour; the trap stops `curate annotate serve &` however the script ends
    script = "set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + block.replace("/tmp/tour", str(home))
    env = {k: v for k, v in os.environ.items()
           if k not in ("CURATE_HOME", "CURATE_DATABASE_URL", "ARGILLA_API_URL", "ARGILLA_API_KEY", "VIRTUAL_ENV")}
    env["CURATE_ANNOTATE_PORT"] = str(free_port())
    run = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=3000)
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "tour.log").write_text(f"--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}")  # what a reader sees
    assert run.returncode == 0, f"exit {run.returncode}\n--- stdout\n{run.stdout[-4000:]}\n--- stderr\n{run.stderr[-6000:]}"

    assert "log in as argilla / 12345678" in run.stderr  # what `serve` printed
    # the libraries underneath stay quiet: no progress bars, warnings or advice that are not ours
    for noise in ("Saving the dataset", "SAWarning", "default credentials", "Statistics collection",
                  "Could not infer", "loss_type=None", "Traceback"):
        assert noise not in run.stdout and noise not in run.stderr, noise
    assert (work / "report.html").stat().st_size > 10_000
    manifest = json.loads((work / "prefs" / "manifest.json").read_text())
    assert manifest["counts"]["pairs"] > 0 and manifest["counts"]["simulated"] == manifest["counts"]["pairs"]
    assert "come from simulated annotators' ratings" in run.stdout
    with sqlite3.connect(home / "curate.db") as db:  # the loop rated into the tour's dataset, not a second one
        datasets = {row[0] for row in db.execute("SELECT DISTINCT dataset FROM annotation_records")}
        loops = db.execute("SELECT count(*) FROM loop_runs WHERE status IN ('done', 'partial')").fetchone()[0]
    assert datasets == {"failures"} and loops == 1
