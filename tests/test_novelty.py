"""Novelty on mixed traffic, with the bundled model: sample traffic, then more of it plus real off-topic conversations.

Conversations unlike every cluster (real arena-hard prompts and answers, "Kafka is a type of coffee") must be flagged
novel; more traffic like the old must join its clusters. Novel ones wait in their nearest cluster, flagged, until
they exceed 10% of all conversations; then the next run refits (docs/concepts-failures.md).
"""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from curation.synthetic import write_jsonl
from curation.store.failure_tables import cluster_assignments

KAFKA = {"id": "kafka", "messages": [{"role": "user", "content": "Kafka is a type of coffee, right?"},
                                     {"role": "assistant", "content": "No: Franz Kafka was a writer, and Apache Kafka is a streaming platform."}]}


EMBED = ("embed", "--backend", "torch")  # the threshold is about the model, not its int8 backends


def arena(shared_data, start: int, n: int) -> list[dict]:
    rows = [json.loads(line) for line in (shared_data / "arena-hard-v0.1" / "gpt-4-0314.jsonl").open()][start : start + n]
    return [{"id": f"arena-{start + i}", "messages": [{"role": "user", "content": r["messages"][0]["content"]},
                                                      {"role": "assistant", "content": r["messages"][1]["content"]["answer"]}]}
            for i, r in enumerate(rows)]


def novel_share(store, prefix: str) -> float:
    with store.connect() as conn:
        n, novel = conn.execute(sa.select(sa.func.count(), sa.func.sum(cluster_assignments.c.novel))
                                .where(cluster_assignments.c.conversation_id.like(f"{prefix}%"))).one()
    return (novel or 0) / n


@pytest.mark.slow
def test_off_topic_traffic_is_novel_more_of_the_same_is_not_and_drift_refits(cli, store, tmp_path, shared_data):
    write_jsonl(tmp_path / "day1.jsonl", 1_000)
    for step in (("ingest", tmp_path / "day1.jsonl"), EMBED, ("cluster",)):
        cli.json(*step)

    write_jsonl(tmp_path / "day2.jsonl", 150, seed=7, id_prefix="day2")
    (tmp_path / "off.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arena(shared_data, 0, 60) + [KAFKA]))
    cli.json("ingest", tmp_path / "day2.jsonl", tmp_path / "off.jsonl")
    cli.json(*EMBED)
    mixed = cli.json("cluster")
    assert not mixed["refit"]  # about 6% novel: below the 10% that triggers a refit
    assert novel_share(store, "arena") >= 0.95 and novel_share(store, "kafka") == 1.0
    assert novel_share(store, "day2") <= 0.1  # was 17% when a cluster of identical texts called exact copies novel
    text = cli("cluster").stdout
    assert "novel" in text and "refit when novel conversations exceed 10%" in text

    (tmp_path / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in arena(shared_data, 60, 150)))
    cli.json("ingest", tmp_path / "more.jsonl")
    cli.json(*EMBED)
    drifted = cli.json("cluster")
    assert drifted["refit"] and drifted["novel"] == 0  # over 10% novel: re-clustered, the new topics get clusters
