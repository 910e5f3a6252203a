"""The columnar index behind the embedded server's search engine, without a server."""
from __future__ import annotations

import uuid

import numpy as np

from annotations.server.index import DatasetIndex, TextQueryTerms, normalise_text, sort_key


def doc(i: int, **extra) -> dict:
    return {"id": uuid.UUID(int=i), "external_id": f"r{i}", "status": "pending", "inserted_at": float(i),
            "updated_at": float(i), "text": {"response": f"Answer number {i}: use_snake case"},
            "metadata": {"failure_score": i / 10, "cluster": f"k{i % 2}"}, **extra}


def test_text_query_words_phrases_prefixes_and_exclusions():
    text = normalise_text("How do I sort a list in Python? Use sorted(), not list.sort!")
    assert TextQueryTerms.parse("python sorted").score(text) == 2
    assert TextQueryTerms.parse("pyth").score(text) == 0  # whole words only
    assert TextQueryTerms.parse("pyth*").score(text) == 1
    assert TextQueryTerms.parse('"sort a list"').score(text) == 1
    assert TextQueryTerms.parse('"list sort a"').score(text) == 0
    assert TextQueryTerms.parse("python -sorted").score(text) == 0
    assert TextQueryTerms.parse("use_snake").score(normalise_text("use_snake case")) == 1


def test_upsert_replace_delete_and_per_user_status():
    index = DatasetIndex({"response": "text"}, {"failure_score": "float", "cluster": "terms"})
    for i in range(3000):  # past the first growth of every column
        index.upsert(doc(i))
    index.set_response(5, {"id": "x", "user_id": "alice", "status": "submitted", "values": {"helpfulness": 3}})
    assert index.user_codes("alice")[5] == 2 and index.n_responses[5] == 1
    index.upsert(doc(5))  # a re-index replaces the record's responses with the ones it carries
    assert index.user_codes("alice")[5] == 0 and index.n_responses[5] == 0
    index.delete(uuid.UUID(int=7))
    assert not index.live()[7] and index.size == 3000 and uuid.UUID(int=7) not in index.slot_of
    assert index.metadata_values("failure_score")[2999] == 299.9
    assert index.metadata_values("cluster")[3] == ("k1",)
    index.configure_metadata("failure_score", "terms")  # re-typed from the stored metadata
    assert index.metadata_values("failure_score")[1] == ("0.1",)


def test_sort_key_puts_missing_last_both_ways():
    values = np.array([2.0, np.nan, 1.0, 3.0])
    assert list(np.argsort(sort_key(values, descending=False), kind="stable")) == [2, 0, 3, 1]
    assert list(np.argsort(sort_key(values, descending=True), kind="stable")) == [3, 0, 2, 1]
    labels = np.array(["b", None, "a"], dtype=object)
    assert list(np.argsort(sort_key(labels, descending=True), kind="stable")) == [0, 2, 1]


def test_text_scores_match_the_per_record_rule():
    index = DatasetIndex({"prompt": "chat", "response": "text"}, {})
    texts = ["sort a list in python", "python python snakes", "a list of lists", "", "sorted list python"]
    for i, text in enumerate(texts):
        index.upsert({**doc(i), "text": {"prompt": text, "response": f"reply {i} list"}})
    index.delete(uuid.UUID(int=4))
    for q in ("python", "list python", "sort python", "snakes list", "python sort list", '"a list"', "list -python",
              "pyth*", "reply", '"python reply"', "-python"):
        expected = [TextQueryTerms.parse(q).score(" | ".join(index.text[n][s] for n in ("prompt", "response")))
                    if s != 4 else 0.0 for s in range(len(texts))]
        assert list(index.text_scores(q, None)) == expected, q
    assert list(index.text_scores("list", "prompt")) == [1.0, 0.0, 1.0, 0.0, 0.0]
