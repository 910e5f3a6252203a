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
