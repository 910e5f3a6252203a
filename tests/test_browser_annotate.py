"""The annotation loop through the real web UI: push → an annotator rates in Chromium → pull.

Real oasst1 conversations scored by the real failure detectors, embedded with the bundled MiniLM model, pushed
with `annotations.push` into the embedded server; an annotator logs in to the Argilla UI (Debian's Chromium,
driven by Playwright), sees the highest-failure-score conversation first with the reward model's suggestions,
rates the five attributes and submits; `annotations.pull` then finds exactly that rating. The failure-score
filter and "Find similar" are exercised in the UI too. Screenshots go to test-artifacts/browser/.
"""
from __future__ import annotations

import math
import os
import re
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from annotations.template import ATTRIBUTES

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
MODEL_VERSION = "rm-browser-v1"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian's Chromium is not installed at {CHROMIUM}"),
]


def pick_conversations(store, n: int = 10) -> list[str]:
    """Conversations with an assistant reply whose failure scores lie ≥ 0.02 apart (so UI bounds with two decimals separate them)."""
    from curation.store import loads
    from curation.store.failure_tables import failure_scores as table
    from curation.store.tables import conversations

    with store.connect() as conn:
        rows = conn.execute(
            sa.select(conversations.c.id, conversations.c.messages, table.c.failure_score)
            .join(table, table.c.conversation_id == conversations.c.id)
            .order_by(table.c.failure_score.desc(), conversations.c.id)
        ).all()
    chosen, last = [], math.inf
    for cid, messages, score in rows:
        if score <= last - 0.02 and any(m.get("role") == "assistant" for m in loads(messages)):
            chosen.append(cid)
            last = score
        if len(chosen) == n:
            break
    return chosen


def write_inputs(store, ids: list[str]) -> None:
    """What the embed and reward stages would have written: real MiniLM vectors and reward-model attributes."""
    from curation.embed import Embedder
    from curation.embed.run import text_hash
    from curation.embed.vectors import ensure_space, write_vectors
    from curation.store import dumps, loads, utcnow
    from curation.store.failure_tables import rewards
    from curation.store.tables import conversations

    with store.connect() as conn:
        messages = dict(conn.execute(sa.select(conversations.c.id, conversations.c.messages).where(conversations.c.id.in_(ids))).all())
    texts = ["\n".join(str(m.get("content", "")) for m in loads(messages[cid])) for cid in ids]
    embedder = Embedder(None, "torch", cache_dir=store.home / "models")
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    run = store.start_run("browser-test-inputs")
    space = ensure_space(store, "browser|minilm|torch", embedder.label, "thread", "torch", vectors.shape[1], run)
    write_vectors(store, space, [(cid, text_hash(cid), v) for cid, v in zip(ids, vectors)], run)
    with store.begin() as conn:
        conn.execute(rewards.insert(), [
            {"conversation_id": cid, "model_version": MODEL_VERSION, "reward": 0.5, "scored_at": utcnow(), "run_id": run,
             "attributes": dumps({a: float((i + k) % 5) for k, a in enumerate(ATTRIBUTES)})}
            for i, cid in enumerate(ids)
        ])


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def suggested(page) -> dict[str, str | None]:
    """The value the UI marks with the suggestion icon, per attribute."""
    out = {}
    for name in ATTRIBUTES:
        marked = page.locator(f"label[for^={name}_]:has(.label-text__suggestion-icon)")
        out[name] = marked.first.get_attribute("for").split("_")[-1] if marked.count() else None
    return out


def shows(page, text: str) -> None:
    """Wait until the page shows a plain-words stretch of `text` (the fields render Markdown, so not its syntax)."""
    plain = re.search(r"[A-Za-z][A-Za-z0-9 ,']{24,}", text)
    snippet = (plain.group(0) if plain else text.strip())[:30].strip()
    page.get_by_text(snippet, exact=False).first.wait_for()


def test_push_rate_in_the_browser_then_pull(store, oasst_file, argilla_env, browser_page):
    from annotations.pull import pull
    from annotations.push import push
    from annotations.server import add_user
    from annotations.tables import rating_responses, ratings
    from curation.ingest import ingest
    from curation.signals import score_failures

    ingest(store, [oasst_file], progress=False)
    score_failures(store, progress=False)
    ids = pick_conversations(store)
    assert len(ids) >= 6
    write_inputs(store, ids)
    dataset = f"browser-{uuid.uuid4().hex[:8]}"
    assert push(store, dataset, ids=ids, progress=False)["pushed"] == len(ids)
    add_user(argilla_env.home, "rater", "annotator", "rater-password")

    url, owner = argilla_env.url, {"X-Argilla-Api-Key": argilla_env.api_key}
    found = httpx.get(f"{url}/api/v1/me/datasets", headers=owner).json()["items"]
    dataset_id = next(d["id"] for d in found if d["name"] == dataset)
    records = httpx.get(f"{url}/api/v1/datasets/{dataset_id}/records", params={"include": ["vectors"], "limit": 1000},
                        headers=owner).json()["items"]
    by_score = sorted(records, key=lambda r: -r["metadata"]["failure_score"])
    response_of = {r["external_id"]: r["fields"]["response"] for r in records}

    page = browser_page
    page.goto(f"{url}/sign-in")
    page.fill("input[name=Username]", "rater")
    page.fill("input[name=Password]", "rater-password")
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "sign-in" not in u)

    # 1. The queue opens on the highest failure score, with the reward model's suggestions on all five attributes.
    page.goto(f"{url}/dataset/{dataset_id}/annotation-mode")
    page.wait_for_selector("label[for=helpfulness_0]")
    top = by_score[0]
    shows(page, top["fields"]["response"])
    rank = ids.index(top["external_id"])
    assert suggested(page) == {a: str((rank + k) % 5) for k, a in enumerate(ATTRIBUTES)}
    page.screenshot(path=str(ARTIFACTS / "01-queue-top-failure-with-suggestions.png"))

    # 2. Rate the five attributes (values that differ from the suggestions) and submit.
    rating = {a: (rank + k + 2) % 5 for k, a in enumerate(ATTRIBUTES)}
    for name, value in rating.items():
        page.click(f"label[for={name}_{value}]")
    page.screenshot(path=str(ARTIFACTS / "02-rated.png"))
    page.get_by_role("button", name="Submit").click()
    shows(page, by_score[1]["fields"]["response"])  # the queue moves on to the next failure
    page.screenshot(path=str(ARTIFACTS / "03-submitted-next-in-queue.png"))

    # 3. Pull finds exactly that rating, stored raw and as the record's consensus.
    result = pull(store, dataset, progress=False)
    assert result["pulled"] == 1 and result["responses"] == 1
    with store.connect() as conn:
        (raw,) = conn.execute(sa.select(rating_responses)).all()
        (consensus,) = conn.execute(sa.select(ratings)).all()
    assert raw.annotator == "rater" and raw.status == "submitted" and raw.conversation_id == top["external_id"]
    assert {a: getattr(raw, a) for a in ATTRIBUTES} == pytest.approx(rating)
    assert consensus.conversation_id == top["external_id"] and consensus.n_annotators == 1
    assert {a: getattr(consensus, a) for a in ATTRIBUTES} == pytest.approx(rating)
    assert push(store, dataset, ids=ids, progress=False)["pushed"] == 0

    # 4. A failure-score filter in the UI: the three lowest scores, highest of them first.
    low = sorted(r["metadata"]["failure_score"] for r in records)[:3]
    ge, le = math.floor(low[0] * 100) / 100, math.floor(low[2] * 100) / 100 + 0.01
    page.get_by_text("Filters").click()
    page.get_by_text("Metadata").first.click()
    page.get_by_text("Failure score").first.click()
    bounds = page.locator("input[type=number]")
    bounds.nth(0).fill(f"{ge:.2f}")
    bounds.nth(1).fill(f"{le:.2f}")
    bounds.nth(1).press("Tab")  # not Enter: Enter is the UI's "submit" shortcut
    page.wait_for_url(lambda u: "metadata=failure_score.ge" in u)
    page.get_by_text("1 of 3").wait_for()
    shows(page, next(r for r in records if r["metadata"]["failure_score"] == low[2])["fields"]["response"])
    page.screenshot(path=str(ARTIFACTS / "04-failure-score-filter.png"))

    # 5. "Find similar" on the next record in the queue ranks the others by the cosine of their embeddings.
    page.goto(f"{url}/dataset/{dataset_id}/annotation-mode")
    source = by_score[1]
    shows(page, source["fields"]["response"])
    page.get_by_text("Find similar").first.click()
    page.wait_for_url(lambda u: "similarity=" in u)
    vectors = {r["external_id"]: np.asarray(r["vectors"]["conversation_embedding"]) for r in records}
    probe = vectors[source["external_id"]]
    cosine = {k: float(v @ probe / np.linalg.norm(v) / np.linalg.norm(probe)) for k, v in vectors.items()
              if k not in (source["external_id"], top["external_id"])}  # the rated one is no longer pending
    best = max(cosine, key=cosine.get)
    shows(page, response_of[best])
    score = page.locator(".similarity-score").first.inner_text()
    assert abs(float(score.strip().rstrip("%")) - 100 * (1 + cosine[best]) / 2) < 0.2  # Elasticsearch's cosine score
    page.screenshot(path=str(ARTIFACTS / "05-find-similar.png"))
