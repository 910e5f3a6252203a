"""The in-process search engine, through the real argilla-server API, as the web UI and the SDK call it."""
from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import pytest

N = 40


def login(url: str, username: str, password: str) -> dict:
    response = httpx.post(f"{url}/api/v1/token", data={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module")
def world(argilla_server):
    """A dataset of N records (failure_score i/N, clusters k0..k2, 8-d vectors, suggestions) and two annotators."""
    import argilla as rg

    from annotations.server import add_user

    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    settings = rg.Settings(
        fields=[rg.ChatField(name="conversation"), rg.TextField(name="response")],
        questions=[rg.RatingQuestion(name=a, values=[0, 1, 2, 3, 4]) for a in ("helpfulness", "correctness")],
        metadata=[rg.FloatMetadataProperty(name="failure_score"), rg.TermsMetadataProperty(name="cluster"),
                  rg.IntegerMetadataProperty(name="turns")],
        vectors=[rg.VectorField(name="embedding", dimensions=8)],
    )
    dataset = rg.Dataset(name=f"engine-{uuid.uuid4().hex[:8]}", settings=settings, workspace="argilla", client=client).create()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N, 8))
    records = []
    for i in range(N):
        metadata = {"failure_score": i / N, "cluster": f"k{i % 3}"}
        if i % 4:  # a quarter have no `turns`: missing values sort last either way
            metadata["turns"] = i % 7
        topic = "apple pie recipe" if i % 2 else "banana bread"
        records.append(rg.Record(
            id=f"c{i}",
            fields={"conversation": [{"role": "user", "content": f"question {i} about {topic}"}], "response": f"answer {i}"},
            metadata=metadata,
            vectors={"embedding": vectors[i].tolist()},
            suggestions=[rg.Suggestion(question_name="helpfulness", value=i % 5, agent="rm-v1" if i < 20 else "rm-v2")],
        ))
    dataset.records.log(records)
    home = argilla_server.home
    for name in ("alice", "bob"):
        add_user(home, name, "annotator", f"{name}-password")
    return {
        "url": argilla_server.url, "owner": {"X-Argilla-Api-Key": argilla_server.api_key}, "dataset": dataset,
        "id": str(dataset.id), "vectors": vectors,
        "alice": login(argilla_server.url, "alice", "alice-password"), "bob": login(argilla_server.url, "bob", "bob-password"),
    }


def search(world: dict, who: str, body: dict, limit: int = 50, me: bool = True) -> dict:
    path = f"/api/v1/me/datasets/{world['id']}/records/search" if me else f"/api/v1/datasets/{world['id']}/records/search"
    headers = world[who] if who in ("alice", "bob") else world["owner"]
    response = httpx.post(f"{world['url']}{path}?limit={limit}&include=suggestions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def ext(result: dict) -> list[str]:
    return [item["record"]["external_id"] for item in result["items"]]


def pending(status: list[str] | None = None) -> dict:
    return {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": status or ["pending"]}]}}


def metadata_range(ge: float, le: float) -> dict:
    return {"type": "range", "scope": {"entity": "metadata", "metadata_property": "failure_score"}, "ge": ge, "le": le}


def test_pending_queue_serves_highest_failure_score_first_per_user(world):
    queue = search(world, "alice", pending(), limit=5)
    assert queue["total"] == N
    assert ext(queue) == [f"c{i}" for i in range(N - 1, N - 6, -1)]
    top = queue["items"][0]["record"]
    assert top["suggestions"][0]["agent"] == "rm-v2"  # the UI shows the suggestion beside the question

    response = httpx.post(
        f"{world['url']}/api/v1/records/{top['id']}/responses", headers=world["alice"],
        json={"values": {"helpfulness": {"value": 3}, "correctness": {"value": 2}}, "status": "submitted"},
    )
    assert response.status_code == 201, response.text
    after = search(world, "alice", pending(), limit=1)
    assert after["total"] == N - 1 and ext(after) == [f"c{N - 2}"]
    assert ext(search(world, "bob", pending(), limit=1)) == [f"c{N - 1}"]  # bob's queue is his own
    assert ext(search(world, "alice", pending(["submitted"]))) == [f"c{N - 1}"]
    both = search(world, "alice", pending(["pending", "submitted"]))
    assert both["total"] == N

    metrics = httpx.get(f"{world['url']}/api/v1/me/datasets/{world['id']}/metrics", headers=world["alice"]).json()
    assert metrics["responses"] == {"total": N, "submitted": 1, "discarded": 0, "draft": 0, "pending": N - 1}
    progress = httpx.get(f"{world['url']}/api/v1/datasets/{world['id']}/progress", headers=world["owner"])
    assert progress.status_code == 200, progress.text
    progress = progress.json()
    assert (progress["total"], progress["completed"], progress["pending"]) == (N, 1, N - 1)

    # Response-value filters, for one user (the /me endpoint) and across users.
    rated = {"filters": {"and": [{"type": "range", "scope": {"entity": "response", "question": "helpfulness"}, "ge": 3, "le": 4}]}}
    assert ext(search(world, "alice", rated)) == [f"c{N - 1}"]
    assert search(world, "bob", rated)["total"] == 0
    assert ext(search(world, "owner", rated, me=False)) == [f"c{N - 1}"]


def test_metadata_suggestion_and_record_filters(world):
    band = search(world, "alice", {"filters": {"and": [metadata_range(0.25, 0.5)]}})
    assert sorted(ext(band), key=lambda e: int(e[1:])) == [f"c{i}" for i in range(10, 21)]
    terms = {"type": "terms", "scope": {"entity": "metadata", "metadata_property": "cluster"}, "values": ["k1"]}
    both = search(world, "alice", {"filters": {"and": [terms, metadata_range(0.0, 0.3)]}})
    assert sorted(ext(both), key=lambda e: int(e[1:])) == [f"c{i}" for i in range(0, 13) if i % 3 == 1]
    agent = {"type": "terms", "scope": {"entity": "suggestion", "question": "helpfulness", "property": "agent"}, "values": ["rm-v1"]}
    assert search(world, "alice", {"filters": {"and": [agent]}})["total"] == 20
    value = {"type": "range", "scope": {"entity": "suggestion", "question": "helpfulness"}, "ge": 4, "le": 4}
    assert sorted(ext(search(world, "alice", {"filters": {"and": [value]}}))) == sorted(f"c{i}" for i in range(N) if i % 5 == 4)
    status = {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]}
    assert search(world, "alice", {"filters": {"and": [status]}})["total"] >= N - 1


def test_sorting_puts_missing_values_last_both_ways(world):
    def order(direction: str) -> list[str]:
        body = {"sort": [{"scope": {"entity": "metadata", "metadata_property": "turns"}, "order": direction},
                         {"scope": {"entity": "record", "property": "inserted_at"}, "order": "asc"}]}
        return ext(search(world, "alice", body))

    missing = [f"c{i}" for i in range(0, N, 4)]
    for direction in ("asc", "desc"):
        got = order(direction)
        assert got[-len(missing):] == missing
        turns = [int(e[1:]) % 7 for e in got[: -len(missing)]]
        assert turns == sorted(turns, reverse=direction == "desc")
    by_score = ext(search(world, "alice", {"sort": [{"scope": {"entity": "metadata", "metadata_property": "failure_score"}, "order": "asc"}]}, limit=3))
    assert by_score == ["c0", "c1", "c2"]


def test_text_search_in_chat_and_text_fields(world):
    assert search(world, "alice", {"query": {"text": {"q": "apple"}}})["total"] == N // 2
    assert search(world, "alice", {"query": {"text": {"q": "apple", "field": "conversation"}}})["total"] == N // 2
    assert search(world, "alice", {"query": {"text": {"q": "apple", "field": "response"}}})["total"] == 0
    assert ext(search(world, "alice", {"query": {"text": {"q": "question 7 apple"}}})) == ["c7"]
    assert search(world, "alice", {"query": {"text": {"q": '"bread question"'}}})["total"] == 0  # phrases do not cross fields
    assert search(world, "alice", {"query": {"text": {"q": "banana -bread"}}})["total"] == 0
    assert search(world, "alice", {"query": {"text": {"q": "ban*"}}})["total"] == N // 2


def test_find_similar_excludes_the_record_and_ranks_by_cosine(world):
    vectors = world["vectors"] / np.linalg.norm(world["vectors"], axis=1, keepdims=True)
    cosine = vectors @ vectors[5]
    target = search(world, "alice", {"query": {"text": {"q": "question 5 apple"}}})["items"][0]["record"]["id"]
    for order, expected in (("most_similar", np.argsort(-cosine)), ("least_similar", np.argsort(cosine))):
        body = {"query": {"vector": {"name": "embedding", "record_id": target, "order": order}}}
        result = search(world, "alice", body, limit=5)
        expected = [f"c{i}" for i in expected if i != 5][:5]
        assert ext(result) == expected
        scores = [item["query_score"] for item in result["items"]]
        assert scores == sorted(scores, reverse=True)
    filtered = {"query": {"vector": {"name": "embedding", "record_id": target}}, "filters": {"and": [metadata_range(0.5, 1.0)]}}
    assert all(int(e[1:]) >= N // 2 for e in ext(search(world, "alice", filtered, limit=5)))


def test_metadata_metrics(world):
    dataset = world["dataset"]
    got = {}
    for prop in dataset.settings.metadata:
        got[prop.name] = httpx.get(f"{world['url']}/api/v1/metadata-properties/{prop.id}/metrics", headers=world["alice"]).json()
    assert got["failure_score"]["min"] == 0.0 and got["failure_score"]["max"] == pytest.approx((N - 1) / N)
    assert got["turns"]["type"] == "integer" and (got["turns"]["min"], got["turns"]["max"]) == (0, 6)
    assert got["cluster"]["total"] == N and {v["term"]: v["count"] for v in got["cluster"]["values"]} == {"k0": 14, "k1": 13, "k2": 13}


def test_distribution_change_runs_in_process_and_deletes_leave_the_index(world):
    url, owner, dataset_id = world["url"], world["owner"], world["id"]
    done = search(world, "owner", {"filters": {"and": [{"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["completed"]}]}}, me=False)
    assert done["total"] == 1  # alice's submission completed one record (min_submitted = 1)
    patched = httpx.patch(f"{url}/api/v1/datasets/{dataset_id}", headers=owner, json={"distribution": {"strategy": "overlap", "min_submitted": 2}})
    assert patched.status_code == 200, patched.text
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/api/v1/datasets/{dataset_id}/progress", headers=owner).json()["completed"] != 0:
        assert time.monotonic() < deadline, "the distribution job did not run"
        time.sleep(0.2)

    victim = search(world, "owner", {"query": {"text": {"q": "question 3 apple"}}}, me=False)["items"][0]["record"]["id"]
    deleted = httpx.delete(f"{url}/api/v1/datasets/{dataset_id}/records", params={"ids": victim}, headers=owner)
    assert deleted.status_code == 204, deleted.text
    assert search(world, "owner", {"query": {"text": {"q": "question 3 apple"}}}, me=False)["total"] == 0
    assert httpx.get(f"{url}/api/v1/datasets/{dataset_id}/progress", headers=owner).json()["total"] == N - 1
