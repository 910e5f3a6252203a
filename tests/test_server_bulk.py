"""The embedded server's direct path for bulk upserts of new records (annotations/server/bulk.py).

It must answer exactly what argilla-server's own path answers, store what the SDK and the index read back, and
leave every other batch (existing records, responses, invalid items) to argilla-server.
"""
from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

ATTRIBUTES = ("helpfulness", "correctness")


@pytest.fixture(scope="module")
def bulk(argilla_server):
    """A published dataset (chat + text fields, two ratings, three metadata kinds, an 8-d vector) and a PUT helper."""
    import argilla as rg

    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    settings = rg.Settings(
        fields=[rg.ChatField(name="conversation"), rg.TextField(name="response")],
        questions=[rg.RatingQuestion(name=a, values=[0, 1, 2, 3, 4]) for a in ATTRIBUTES],
        metadata=[rg.FloatMetadataProperty(name="failure_score"), rg.TermsMetadataProperty(name="signals"),
                  rg.IntegerMetadataProperty(name="cluster_id")],
        vectors=[rg.VectorField(name="embedding", dimensions=8)],
    )
    dataset = rg.Dataset(name=f"bulk-{uuid.uuid4().hex[:8]}", settings=settings, workspace="argilla", client=client).create()
    questions = {q.name: str(q.id) for q in dataset.settings.questions}
    http = httpx.Client(base_url=argilla_server.url, headers={"X-Argilla-Api-Key": argilla_server.api_key}, timeout=60)

    def put(items: list[dict], minimal: bool = False) -> httpx.Response:
        headers = {"Prefer": "return=minimal"} if minimal else {}
        return http.put(f"/api/v1/datasets/{dataset.id}/records/bulk", json={"items": items}, headers=headers)

    def get_all() -> list[dict]:
        response = http.get(f"/api/v1/datasets/{dataset.id}/records",
                            params={"include": ["suggestions", "vectors", "responses"], "limit": 1000})
        return response.json()["items"]

    yield dataset, questions, put, get_all, http
    http.close()


def items(questions: dict, prefix: str, n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        item = {
            "external_id": f"{prefix}-{i}",
            "fields": {"conversation": [{"role": "user", "content": f"question {i} about {prefix}"}],
                       "response": f"answer {i} with python code"},
            "metadata": {"failure_score": float(i / n), "signals": ["thumbs_down"] if i % 2 else [], "cluster_id": i % 3},
            "vectors": {"embedding": [float(x) for x in rng.normal(size=8)]},
            "suggestions": [{"question_id": questions["helpfulness"], "value": i % 5, "agent": "rm-v1"},
                            {"question_id": questions["correctness"], "value": 4 - i % 5, "agent": "rm-v1", "score": 0.5}],
        }
        if i % 4 == 3:
            del item["vectors"], item["suggestions"]
        out.append(item)
    return out


def _comparable(record: dict) -> dict:
    """A record without the times that the second upsert may legitimately move."""
    record = dict(record)
    record.pop("updated_at")
    record["suggestions"] = sorted(({k: v for k, v in s.items() if k != "updated_at"} for s in record["suggestions"]),
                                   key=lambda s: s["question_id"])
    return record


def test_new_records_answer_as_argilla_server_does(bulk):
    dataset, questions, put, get_all, _ = bulk
    sent = items(questions, "same", 12)
    fast = put(sent)
    assert fast.status_code == 200, fast.text
    # the same batch again: every record exists now, so argilla-server's own path answers (and changes nothing)
    stock = put(sent)
    assert stock.status_code == 200, stock.text
    assert set(fast.json()) == set(stock.json()) == {"items"}
    assert [_comparable(r) for r in fast.json()["items"]] == [_comparable(r) for r in stock.json()["items"]]
    first = fast.json()["items"][0]
    assert first["fields"]["conversation"] == [{"role": "user", "content": "question 0 about same"}]
    assert first["vectors"]["embedding"] == pytest.approx(sent[0]["vectors"]["embedding"])


def test_minimal_answer_and_what_the_sdk_and_the_index_read_back(bulk, argilla_server):
    dataset, questions, put, get_all, http = bulk
    sent = items(questions, "lean", 20, seed=1)
    response = put(sent, minimal=True)
    assert response.status_code == 200, response.text
    answered = response.json()["items"]
    # only the direct path knows the header: argilla-server's own path would answer whole records
    assert [set(r) for r in answered] == [{"id", "external_id", "status"}] * 20
    assert [r["external_id"] for r in answered] == [s["external_id"] for s in sent]

    by_external = {r.id: r for r in dataset.records(with_vectors=True, with_suggestions=True)}  # SDK id = external id
    for item in sent:
        record = by_external[item["external_id"]]
        assert record.fields["response"] == item["fields"]["response"]
        assert record.metadata["failure_score"] == item["metadata"]["failure_score"]
        if "vectors" in item:
            assert record.vectors["embedding"] == pytest.approx(item["vectors"]["embedding"])
            assert record.suggestions["helpfulness"].value == item["suggestions"][0]["value"]
            assert record.suggestions["correctness"].score == 0.5
        else:
            assert not record.vectors and not list(record.suggestions)

    # the search index knows them at once: a metadata range filter and a text query, as the UI sends them
    body = {"query": {"text": {"q": "lean"}},
            "filters": {"and": [{"type": "range", "scope": {"entity": "metadata", "metadata_property": "failure_score"},
                                 "ge": 0.5, "le": 1.0}]}}
    found = http.post(f"/api/v1/datasets/{dataset.id}/records/search", json=body, params={"limit": 50}).json()
    assert sorted(i["record"]["external_id"] for i in found["items"]) == sorted(f"lean-{i}" for i in range(10, 20))
    similar = http.post(f"/api/v1/datasets/{dataset.id}/records/search", params={"limit": 5}, json={
        "query": {"vector": {"name": "embedding", "record_id": answered[0]["id"]}}}).json()
    assert similar["items"] and answered[0]["id"] not in {i["record"]["id"] for i in similar["items"]}


def test_other_batches_take_argilla_servers_path(bulk):
    dataset, questions, put, get_all, _ = bulk
    sent = items(questions, "mixed", 6, seed=2)
    assert put(sent[:3], minimal=True).status_code == 200
    mixed = put(sent, minimal=True)  # three exist already: argilla-server's path, whole records back
    assert mixed.status_code == 200, mixed.text
    assert len(mixed.json()["items"]) == 6 and "fields" in mixed.json()["items"][0]

    invalid = items(questions, "invalid", 3, seed=3)
    invalid[1]["suggestions"][0]["value"] = 9  # not one of the rating's values
    refused = put(invalid, minimal=True)
    assert refused.status_code == 422
    assert "Record at position 1 is not valid" in refused.text

    stored = [r["external_id"] for r in get_all()]
    assert sorted(e for e in stored if e.startswith("mixed")) == sorted(f"mixed-{i}" for i in range(6))
    assert not [e for e in stored if e.startswith("invalid")]
