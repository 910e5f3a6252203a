"""`curate loop run` end to end against the real embedded Argilla server: nightly twice, an unreachable Argilla,
and the per-run report rendered in headless Chromium."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from curation.synthetic import write_jsonl

# embeds with the default backend: `make test` runs it once per int8 backend (onnx, openvino)
pytestmark = pytest.mark.embeds

REPO = Path(__file__).resolve().parent.parent
NIGHTLY = REPO / "loops" / "nightly.toml"
CHROMIUM = "/usr/bin/chromium"


def test_nightly_twice_second_run_ingests_nothing_and_says_so(cli, home, argilla_env, tmp_path):
    write_jsonl(home / "incoming" / "day-1.jsonl", 150, seed=21)
    first = cli.json("loop", "run", "--config", NIGHTLY)
    steps = first["steps"]
    assert first["status"] == "done", steps
    assert steps["ingest"]["figures"]["ingested"] == 150
    assert steps["embed"]["figures"]["embedded"] == 150
    assert steps["cluster"]["figures"]["assigned"] == 150
    assert steps["push"]["figures"]["pushed"] == 100  # the nightly budget
    assert steps["export"]["status"] == "skipped" and steps["export"]["message"] == "no ratings yet"
    assert steps["pull"]["figures"]["failure_model"]["refit"] is False  # refits after each pull; no ratings yet
    assert Path(steps["report"]["figures"]["out"]).is_file()

    second = cli("loop", "run", "--config", NIGHTLY)
    assert "nothing new to ingest" in second.stderr
    run2 = cli.json("loop", "history")["runs"][0]
    assert run2["steps"]["ingest"]["status"] == "skipped" and run2["ingested"] == 0
    assert run2["steps"]["embed"]["figures"]["embedded"] == 0  # incremental all the way down
    # the budget is per run: the second run routes the conversations not pushed yet (a sibling with the same
    # question may ride along as response B of a preference record), so now every one of the 150 is in the dataset
    assert 0 < run2["pushed"] <= 50
    from annotations.tables import annotation_records
    from curation.store import Store

    with Store.open(home).connect() as conn:
        rows = conn.execute(sa.select(annotation_records.c.conversation_id, annotation_records.c.conversation_id_b)).all()
    assert len({c for row in rows for c in row if c}) == 150
    assert run2["status"] == "done" and run2["run_id"] != first["run_id"]
    status = cli.json("loop", "status")
    assert status["latest"]["run_id"] == run2["run_id"] and status["running"] == []


def test_unreachable_argilla_skips_annotation_and_ends_partial(cli, home, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("ARGILLA_API_KEY", "unreachable.key")
    monkeypatch.setenv("CURATE_ANNOTATE_RETRIES", "2")
    write_jsonl(home / "incoming" / "day-1.jsonl", 60, seed=22)
    result = cli("loop", "run", "--config", NIGHTLY, "--json", code=3)
    summary = orjson.loads(result.stdout)
    assert summary["status"] == "partial"
    for step in ("push", "pull"):
        assert summary["steps"][step]["status"] == "skipped"
        assert summary["steps"][step]["message"].startswith("unreachable") and "127.0.0.1:9" in summary["steps"][step]["message"]
    for step in ("ingest", "embed", "cluster", "flag", "report"):
        assert summary["steps"][step]["status"] == "done", step


@pytest.mark.browser
def test_run_report_renders_in_chromium(cli, home, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CURATE_ANNOTATE_RETRIES", "1")
    write_jsonl(home / "incoming" / "day-1.jsonl", 80, seed=23)
    cli("loop", "run", "--config", NIGHTLY, code=3)
    write_jsonl(home / "incoming" / "day-2.jsonl", 80, seed=24)
    summary = orjson.loads(cli("loop", "run", "--config", NIGHTLY, "--json", code=3).stdout)
    report = summary["steps"]["report"]["figures"]["out"]
    errors: list[str] = []
    artefacts = REPO / "test-artifacts"
    artefacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(Path(report).as_uri())
        assert page.locator("h1").inner_text().startswith("Curate loop nightly")
        assert page.locator("#trend polyline.series").count() >= 1  # the trend is drawn, one line per cluster
        assert "(2 runs)" in page.locator("#trend").text_content()
        assert page.locator("#annotation tr").count() == 3  # header + two runs
        page.screenshot(path=str(artefacts / "loop-report.png"), full_page=True)
        browser.close()
    assert errors == []
