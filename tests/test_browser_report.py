"""`curate report` as a reader sees it: Debian's Chromium (Playwright) at 1400 and 1920 px wide.

At both widths: no console error and no network request; no text drawn outside its SVG's box (the bar labels were
clipped by the viewBox once); no horizontal scrolling; each map has a legend (cluster names and colours on the left,
the failure-score colour scale on the right); the bars are in the order they are drawn, with an axis title; and the
trend says it needs two runs after one run, then draws one labelled line per coloured cluster after two.
Full-page screenshots go to test-artifacts/report-<width>.png.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from curation.cluster import cluster

from tests.test_report import sample_traffic

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WIDTHS = (1400, 1920)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian's Chromium is not installed at {CHROMIUM}"),
]

# every <text> of every SVG (plots and legend scales) against that SVG's box, in CSS pixels
OUTSIDE = """() => {
  const out = [];
  for (const svg of document.querySelectorAll('svg')) {
    const box = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      const r = t.getBoundingClientRect();
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
        out.push(`${svg.id || svg.getAttribute('class')}: "${t.textContent}" at ${r.left.toFixed(0)}–${r.right.toFixed(0)} `
                 + `outside ${box.left.toFixed(0)}–${box.right.toFixed(0)}`);
    }
  }
  return out;
}"""
LEGENDS = """() => [...document.querySelectorAll('svg.plot[id^="map-"]')].map(svg => {
  const legend = document.querySelector(`.legend[data-for="${svg.id}"]`);
  const r = legend && legend.getBoundingClientRect();
  return [svg.id, legend ? legend.innerText : null, r ? r.width * r.height : 0,
          legend ? legend.querySelectorAll('li').length : 0, legend ? legend.querySelectorAll('linearGradient stop').length : 0];
})"""


def look(report: Path, name: str) -> dict:
    """What the page shows at each width: errors, text outside its box, overflow, legends, bars, trend."""
    from playwright.sync_api import sync_playwright

    seen: dict = {}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for width in WIDTHS:
            errors: list[str] = []
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith(("file:", "data:")) else None)
            page.goto(report.as_uri())
            seen[width] = {
                "errors": errors,
                "outside": page.evaluate(OUTSIDE),
                "overflow": page.evaluate("document.documentElement.scrollWidth - window.innerWidth"),
                "legends": page.evaluate(LEGENDS),
                "plots": page.eval_on_selector_all("svg.plot", "els => els.map(e => e.id)"),
                "rates": page.eval_on_selector_all("#rates text", "els => els.map(e => e.textContent)"),
                "trend": page.eval_on_selector("#trend", "e => [e.tagName.toLowerCase(), e.textContent]"),
                "series": page.locator("#trend polyline.series").count(),
                "series_labels": page.eval_on_selector_all("#trend text.series-label", "els => els.map(e => e.textContent)"),
            }
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
            page.close()
        browser.close()
    return seen


def check_page(seen: dict, top: list[dict]) -> None:
    for width, page in seen.items():
        assert page["errors"] == [], width
        assert page["outside"] == [], width
        assert page["overflow"] <= 0, width
        assert {"map-cluster", "map-failure", "rates"} <= set(page["plots"])
        legends = {plot: rest for plot, *rest in page["legends"]}
        assert set(legends) == {"map-cluster", "map-failure"}, "every map has a legend"
        text, area, items, _ = legends["map-cluster"]
        coloured = top[:12]
        assert area > 0 and items == len(coloured) + 1  # one entry per coloured cluster, one for the grey rest
        for r in coloured:
            assert f"{r['id']}. {r['label'][:20]}" in text
        assert re.search(r"grey: the other \d+ clusters", text)
        text, area, _, stops = legends["map-failure"]
        assert area > 0 and stops >= 3 and "failure score" in text
        # the bars are sorted by what they draw, and the axis says what that is
        rates = [int(m.group(1)) for t in page["rates"] if (m := re.fullmatch(r"(\d+)% · n=[\d,]+", t))]
        assert len(rates) == len(top) and rates == sorted(rates, reverse=True)
        assert any(t.startswith("failure rate: share of the cluster's conversations") for t in page["rates"])
        assert f"100% · n={max(r['size'] for r in top if r['failure_rate'] == 1.0)}" in page["rates"] if any(
            r["failure_rate"] == 1.0 for r in top) else True


def test_report_reads_at_two_widths(store, cli, tmp_path):
    sample_traffic(store, 600, seed=3, prefix="day1")
    cluster(store, k=16)
    one = tmp_path / "one-run.html"
    cli("report", "--out", one, "--top", "14", "--min-users", "1", "--home", cli.home)
    from curation.cluster import rank_clusters

    top = rank_clusters(store, top=14, min_users=1)
    seen = look(one, "report-one-run")
    check_page(seen, top)
    for page in seen.values():
        tag, text = page["trend"]
        assert tag == "p" and "needs at least two clustering runs" in text and page["series"] == 0

    sample_traffic(store, 300, seed=4, prefix="day2")
    cluster(store, k=16)
    two = tmp_path / "two-runs.html"
    cli("report", "--out", two, "--top", "14", "--min-users", "1", "--home", cli.home)
    top = rank_clusters(store, top=14, min_users=1)
    seen = look(two, "report")
    check_page(seen, top)
    for page in seen.values():
        tag, text = page["trend"]
        assert tag == "svg" and "(2 runs)" in text
        labels = page["series_labels"]
        assert page["series"] == len(labels) == 12  # one labelled line per coloured cluster
        assert {label.split(".")[0] for label in labels} == {str(r["id"]) for r in top[:12]}
    assert (ARTIFACTS / "report-1400.png").stat().st_size > 10_000
