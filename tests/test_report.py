"""`curate report`: one offline HTML file, rendered in Debian's headless Chromium with Playwright."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from curation.cluster import cluster
from curation.errors import InputError
from curation.report import write_report

from tests.test_cluster import add_conversations, blobs

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def clustered(store):
    """Two clustering runs over a store with vectors in the embed stage's own table."""
    from curation.embed.vectors import ensure_space, write_vectors

    X, y = blobs(40, [0, 1, 2, 3], seed=0)
    ids = add_conversations(store, y, "a", failing_topic=1)
    run_id = store.start_run("embed", {})
    space = ensure_space(store, "test|last_turn|torch", "test", "last_turn", "torch", X.shape[1], run_id)
    write_vectors(store, space, [(cid, f"h{cid}", X[i]) for i, cid in enumerate(ids)], run_id)
    cluster(store, k=4)
    X2, y2 = blobs(3, [1], seed=4)
    ids2 = add_conversations(store, y2, "b", failing_topic=1)
    write_vectors(store, space, [(cid, f"h{cid}", X2[i]) for i, cid in enumerate(ids2)], run_id)
    cluster(store, k=4)
    return store


def test_report_is_self_contained(clustered, tmp_path):
    result = write_report(clustered, tmp_path / "r.html", min_users=1)
    html = (tmp_path / "r.html").read_text()
    assert result["points"] == 163 and result["clusters"] == 4
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count('class="plot"') == 4 and "football" not in html.split("<body>")[0]
    with pytest.raises(InputError, match="ending in .html"):
        write_report(clustered, tmp_path / "r.pdf")


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_renders_in_headless_chromium(clustered, tmp_path, cli):
    out = tmp_path / "report.html"
    summary = cli.json("report", "--out", out, "--min-users", "1", "--home", cli.home)
    assert summary["out"] == str(out)
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1240, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith(("file:", "data:")) else None)
        page.goto(out.as_uri())
        marks = page.eval_on_selector_all("svg.plot", "els => els.map(e => [e.id, Number(e.dataset.marks), "
                                          "e.getBoundingClientRect().width, e.querySelectorAll('circle,rect.bar,polyline').length])")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    drawn = {plot: (n, width, shapes) for plot, n, width, shapes in marks}
    assert set(drawn) == {"map-cluster", "map-failure", "rates", "trend"}
    assert drawn["map-cluster"][0] == 163 and drawn["map-cluster"][2] >= 163 and drawn["map-cluster"][1] > 300
    assert drawn["rates"][2] >= 4 and drawn["trend"][0] == 4 and drawn["trend"][2] >= 4
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def sample_traffic(store, n: int, seed: int, prefix: str, dim: int = 32) -> list[str]:
    """`curation.synthetic` conversations (planted failures, corrections, feedback) ingested, with vectors that sit
    around one centre per (topic, planted failure), as an embedder would put similar conversations together."""
    import zlib

    import numpy as np

    from curation.embed.vectors import ensure_space, write_vectors
    from curation.ingest import ingest_records
    from curation.synthetic import generate

    records = list(generate(n, seed=seed, id_prefix=prefix))
    ingest_records(store, records)
    rng = np.random.default_rng(seed)
    rows = []
    for r in records:
        key = f'{r["metadata"]["topic"]}/{r["metadata"]["demo_truth"]["failure"]}'
        centre = np.random.default_rng(zlib.crc32(key.encode())).normal(size=dim)
        v = centre / np.linalg.norm(centre) + rng.normal(scale=0.04, size=dim)
        rows.append((r["id"], f"h-{r['id']}", (v / np.linalg.norm(v)).astype(np.float32)))
    run_id = store.start_run("embed", {})
    space = ensure_space(store, "sample|last_turn|torch", "sample", "last_turn", "torch", dim, run_id)
    write_vectors(store, space, rows, run_id)
    return [r["id"] for r in records]


@pytest.fixture
def sample_store(store):
    """One clustering run over 600 sample conversations in 16 clusters."""
    sample_traffic(store, 600, seed=3, prefix="day1")
    cluster(store, k=16)
    return store


def test_failed_exchange_finds_the_reply_that_failed():
    from curation.report.data import failed_exchange

    corrected = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "5."},
                 {"role": "user", "content": "That's wrong, it is 4."},
                 {"role": "assistant", "content": "You are right, I apologise."}]
    assert failed_exchange(corrected) == {"prompt": "What is 2 + 2?", "reply": "5.", "follow_up": "That's wrong, it is 4."}
    cut = [{"role": "user", "content": "Plan a trip."}, {"role": "assistant", "content": "Day 1"},
           {"role": "user", "content": "Your answer got cut off, please finish it."},
           {"role": "assistant", "content": "You are right, I apologise."}]
    assert failed_exchange(cut)["reply"] == "You are right, I apologise."  # no correction pattern, no feedback turn
    assert failed_exchange(cut, flagged=1)["reply"] == "Day 1"  # the thumbs down pointed at turn 1
    assert failed_exchange([{"role": "user", "content": "hi"}]) == {"prompt": "hi", "reply": "", "follow_up": ""}


def test_examples_are_distinct_failures_with_reply_and_signals(sample_store):
    from curation.report.data import gather

    data = gather(sample_store, top=8, min_users=1)
    shown = [r for r in data["top"] if r["failures"]]
    assert shown and all(r["shown_examples"] for r in data["top"])
    for r in shown:
        prompts = [e["prompt"] for e in r["shown_examples"]]
        assert len(prompts) == len(set(prompts)) == min(2, r["failures"]), r["id"]
        for e in r["shown_examples"]:
            assert e["reply"] and e["signals"] and e["failure_score"] >= 0.5
    # the corrected reply is shown, not the apology that followed the correction
    replies = [e["reply"] for r in shown for e in r["shown_examples"]]
    assert not any(reply.startswith("You are right, I apologise") for reply in replies)


def test_report_says_how_many_clusters_it_shows(sample_store, tmp_path, cli):
    summary = cli.json("report", "--out", tmp_path / "r.html", "--top", "5", "--min-users", "1", "--home", cli.home)
    assert (summary["clusters"], summary["shown"], summary["total_clusters"]) == (5, 5, 16)
    text = cli("report", "--out", tmp_path / "r.html", "--top", "5", "--home", cli.home).stdout
    assert "the top 5 of 16 clusters" in text
    html = (tmp_path / "r.html").read_text()
    assert "the top 5 of 16" in html and "needs at least two clustering runs" in html  # one run: no trend drawn
    everything = cli.json("report", "--out", tmp_path / "all.html", "--top", "40", "--home", cli.home)
    assert everything["shown"] == everything["total_clusters"] == 16


def test_loop_report_shows_its_own_step_as_this_step(store):
    import re

    from loops.loop.config import LoopConfig
    from loops.loop.runner import run_loop
    from loops.loop.steps import report

    result = run_loop(store, LoopConfig(name="report-test"), steps=[("first", lambda ctx: {"n": 1}), ("report", report)])
    html = Path(result["steps"]["report"]["figures"]["out"]).read_text()
    row = re.search(r"<tr><td>report</td>.*?</tr>", html).group(0)
    assert "running" not in row and "this step" in row and "writes this report" in row
    assert re.search(r"<tr><td>first</td><td class='done'>done</td>", html)
