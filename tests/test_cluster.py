"""Clustering with stable ids, labels, ranking, privacy and the CLI, on real stores.

Most tests cluster generated vectors passed in directly (`vectors=`); one test runs the whole CLI path with the
real bundled model on real arena-hard prompts.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
from scipy import stats

from curation.cluster import AutoKMeans, SampledHDBSCAN, cluster, rank_clusters, show_cluster
from curation.cluster.identity import match
from curation.cluster.rank import wilson
from curation.ingest import ingest_records
from curation.store.failure_tables import cluster_assignments, cluster_history

TOPICS = ["python pandas dataframe merge", "baking sourdough bread recipe", "football world cup history",
          "tax return deadline filing", "guitar chords for beginners"]


def blobs(n_per: int, topics: list[int], seed: int, dim: int = 48, noise: float = 0.05):
    """Unit vectors around one fixed centre per topic (centres depend only on the topic, not on the seed)."""
    centres = np.random.default_rng(1234).normal(size=(10, dim))
    rng = np.random.default_rng(seed)
    y = np.repeat(topics, n_per)
    X = centres[y] / np.linalg.norm(centres[y], axis=1, keepdims=True) + rng.normal(scale=noise, size=(len(y), dim))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


def add_conversations(store, y, prefix: str, failing_topic: int | None = None, users: int = 10):
    """One conversation per row of y, about its topic; the failing topic's replies get a thumbs down."""
    records = []
    for i, t in enumerate(y):
        topic = TOPICS[t % len(TOPICS)]
        fails = t == failing_topic and i % 3 != 0
        records.append({"id": f"{prefix}{i}", "user_id": f"user{i % users}",
                        "messages": [{"role": "user", "content": f"question {i} about {topic}"},
                                     {"role": "assistant", "content": f"An answer about {topic}."}],
                        "feedback": [{"type": "thumbs_down"}] if fails else []})
    ingest_records(store, records)
    return [f"{prefix}{i}" for i in range(len(y))]


def assignments(store) -> dict[str, int]:
    with store.connect() as conn:
        return dict(conn.execute(sa.select(cluster_assignments.c.conversation_id, cluster_assignments.c.cluster_id)).all())


def test_ids_survive_reruns_new_data_and_refits(store):
    X, y = blobs(40, [0, 1, 2], seed=0)
    ids = add_conversations(store, y, "a")
    first = cluster(store, k=3, vectors=(ids, X))
    assert first["clusters"] == 3 and first["assigned"] == 120 and first["refit"]
    before = assignments(store)
    topic_of = {y[i]: before[cid] for i, cid in enumerate(ids)}
    assert len(set(topic_of.values())) == 3 and all(before[cid] == topic_of[y[i]] for i, cid in enumerate(ids))

    again = cluster(store, k=3, vectors=(ids, X))
    assert again["assigned"] == 0 and not again["refit"] and assignments(store) == before

    X2, y2 = blobs(5, [0, 1, 2], seed=1)  # more of the same topics: they join, nothing is novel
    ids2 = add_conversations(store, y2, "b")
    grown = cluster(store, k=3, vectors=(ids + ids2, np.vstack([X, X2])))
    assert grown["assigned"] == 15 and grown["novel"] == 0 and not grown["refit"]
    now = assignments(store)
    assert all(now[cid] == topic_of[y2[i]] for i, cid in enumerate(ids2))

    X3, y3 = blobs(30, [3], seed=2)  # a new topic, 18% of all: drift triggers a refit that keeps the old ids
    ids3 = add_conversations(store, y3, "c")
    refit = cluster(store, k=4, vectors=(ids + ids2 + ids3, np.vstack([X, X2, X3])))
    assert refit["refit"] and refit["clusters"] == 4
    after = assignments(store)
    assert all(after[cid] == before[cid] for cid in ids)
    assert len({after[cid] for cid in ids3}) == 1 and after[ids3[0]] not in topic_of.values()
    with store.connect() as conn:
        runs = conn.execute(sa.select(sa.func.count(sa.distinct(cluster_history.c.run_id)))).scalar_one()
    assert runs == 4


def test_novel_conversations_are_marked_below_drift(store):
    X, y = blobs(60, [0, 1, 2], seed=0)
    ids = add_conversations(store, y, "a")
    cluster(store, k=3, vectors=(ids, X))
    X2, y2 = blobs(6, [4], seed=3)  # 3% of all: not enough drift for a refit, so they are flagged novel
    ids2 = add_conversations(store, y2, "n")
    result = cluster(store, k=3, vectors=(ids + ids2, np.vstack([X, X2])))
    assert not result["refit"] and result["novel"] == 6
    with store.connect() as conn:
        novel = conn.execute(sa.select(cluster_assignments.c.conversation_id).where(cluster_assignments.c.novel == 1))
        assert set(novel.scalars()) == set(ids2)


def test_same_input_and_seed_give_the_same_clusters():
    X, _ = blobs(50, [0, 1, 2, 3, 4], seed=5, noise=0.2)
    a = AutoKMeans(n_clusters="auto", random_state=7).fit(X)
    b = AutoKMeans(n_clusters="auto", random_state=7).fit(X)
    assert a.n_clusters_ == 5 and np.array_equal(a.labels_, b.labels_)


def test_auto_k_finds_clear_groups_of_unequal_size_and_its_silhouette_is_scikit_learns():
    from sklearn.metrics import silhouette_score

    from curation.cluster.model import _silhouette, choose_k, k_ceiling

    X, _ = blobs(12, [0, 1, 2, 3], seed=1, noise=0.12)  # 4 groups of 12 next to 3 groups of 60 and 3 of 6
    X = np.vstack([X, blobs(60, [4, 5, 6], seed=2, noise=0.12)[0], blobs(6, [7, 8, 9], seed=3, noise=0.12)[0]])
    assert k_ceiling(len(X)) == 22 and choose_k(X, random_state=0) == 10
    rng = np.random.default_rng(0)
    D = np.abs(rng.normal(size=(200, 200)))
    D = D + D.T
    np.fill_diagonal(D, 0)
    labels = rng.integers(0, 30, size=200)
    assert _silhouette(D, labels) == pytest.approx(silhouette_score(D, labels, metric="precomputed"), abs=1e-12)


def test_hdbscan_option_finds_dense_groups():
    X, y = blobs(60, [0, 1, 2], seed=0)
    labels = SampledHDBSCAN(random_state=0).fit(X).labels_
    found = labels[labels >= 0]
    assert len(np.unique(found)) == 3 and (labels >= 0).mean() > 0.8


def test_match_keeps_ids_by_centroid_similarity():
    old = np.eye(3, dtype=np.float32)
    new = np.array([[0, 1, 0], [1, 0.05, 0], [0, 0, -1]], dtype=np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    assert match([7, 8, 9], old, new) == [8, 7, 10]


def test_wilson_matches_known_values():
    low, high = wilson(np.array([2, 0, 40]), np.array([2, 10, 100]))
    assert low[0] == pytest.approx(0.342, abs=1e-3) and high[0] == 1
    assert low[1] == 0 and high[1] == pytest.approx(0.278, abs=1e-3)
    assert (low[2], high[2]) == (pytest.approx(0.309, abs=1e-3), pytest.approx(0.498, abs=1e-3))
    # scalars too, as the reward model's evaluation uses it (ties count half a success)
    assert tuple(map(float, wilson(8, 10))) == (pytest.approx(0.4902, abs=1e-3), pytest.approx(0.9433, abs=1e-3))
    assert float(wilson(7.5, 10)[0]) < float(wilson(8, 10)[0]) and tuple(map(float, wilson(0, 0))) == (0, 1)


def test_ranking_puts_the_failing_topic_first_and_a_tiny_perfect_failure_below_it(store):
    X, y = blobs(40, [0, 1, 2, 3], seed=0)
    ids = add_conversations(store, y, "a", failing_topic=2)
    Xt, yt = blobs(2, [4], seed=9, noise=0.01)  # a tiny cluster where both fail
    ids_t = add_conversations(store, yt, "t", failing_topic=4)
    ingest_records(store, [{"conversation_id": cid, "type": "flag"} for cid in ids_t])
    cluster(store, k=5, vectors=(ids + ids_t, np.vstack([X, Xt])))
    rows = rank_clusters(store, min_users=1)
    assert set(rows[0]) >= {"id", "label", "keywords", "size", "failure_rate", "ci_low", "ci_high", "lift", "p_value", "examples"}
    top = rows[0]
    assert top["size"] == 40 and top["significant"] and top["lift"] > 2 and top["ci_low"] <= top["failure_rate"] <= top["ci_high"]
    assert "football" in " ".join(top["keywords"]) and "football" in top["label"]
    assert "football" in top["examples"][0]["prompt"]
    tiny = next(r for r in rows if r["size"] == 2)
    assert tiny["failure_rate"] == 1 and rows.index(tiny) > 0
    assert rank_clusters(store, top=2, min_users=1) == rows[:2]
    # q-values are Benjamini–Hochberg over every cluster's p-value
    p = np.array([r["p_value"] for r in rows])
    assert [r["q_value"] for r in rows] == pytest.approx(stats.false_discovery_control(p, method="bh"))


def test_clusters_with_few_users_show_only_counts(store):
    X, y = blobs(30, [0, 1], seed=0)
    ids = add_conversations(store, y[:30], "a", users=10) + add_conversations(store, y[30:], "b", users=2)
    cluster(store, k=2, vectors=(ids, X))
    rows = {r["size"]: r for r in rank_clusters(store)}
    by_users = sorted(rank_clusters(store), key=lambda r: r["hidden"])
    assert not by_users[0]["hidden"] and by_users[0]["label"] and by_users[0]["examples"]
    hidden = by_users[1]
    assert hidden["hidden"] and hidden["label"] is None and hidden["keywords"] == [] and hidden["examples"] == []
    assert hidden["size"] == 30 and len(rows) == 1
    assert show_cluster(store, hidden["id"])["worst"] == []


def test_without_user_ids_the_privacy_rule_is_off(store):
    X, y = blobs(10, [0, 1], seed=0)
    ingest_records(store, [{"id": f"x{i}", "messages": [{"role": "user", "content": TOPICS[t]},
                                                        {"role": "assistant", "content": "ok"}]} for i, t in enumerate(y)])
    cluster(store, k=2, vectors=([f"x{i}" for i in range(len(y))], X))
    assert all(not r["hidden"] and r["label"] for r in rank_clusters(store))


@pytest.mark.smoke
def test_cli_on_real_prompts_with_the_bundled_model(cli, tmp_path, shared_data, store):
    """ingest → embed (torch, bundled MiniLM) → cluster → clusters → clusters show → cluster again: same ids."""
    questions = [json.loads(line) for line in (shared_data / "arena-hard-v0.1" / "question.jsonl").open()][:60]
    answers = {json.loads(line)["uid"]: json.loads(line)
               for line in (shared_data / "arena-hard-v0.1" / "gpt-3.5-turbo-0125.jsonl").open()}
    path = tmp_path / "arena.jsonl"
    with path.open("w") as out:
        for i, q in enumerate(questions):
            reply = answers[q["uid"]]["messages"][-1]["content"]["answer"]
            feedback = [{"type": "thumbs_down"}] if i % 4 == 0 else []
            out.write(json.dumps({"id": q["uid"], "user_id": f"u{i % 7}", "feedback": feedback,
                                  "messages": [{"role": "user", "content": q["prompt"]},
                                               {"role": "assistant", "content": reply}]}) + "\n")
    cli.json("ingest", path, "--home", cli.home)
    cli.json("embed", "--backend", "torch", "--home", cli.home)
    first = cli.json("cluster", "--home", cli.home)
    assert set(first) >= {"clusters", "assigned", "novel", "run_id"} and first["assigned"] == 60
    assert 2 <= first["clusters"] <= 12
    ranked = cli.json("clusters", "--top", "3", "--min-users", "2", "--home", cli.home)["clusters"]
    assert len(ranked) == 3 and all(r["label"] and r["keywords"] for r in ranked)
    before = assignments(store)
    second = cli.json("cluster", "--home", cli.home)
    assert second["assigned"] == 0 and assignments(store) == before
    shown = cli("clusters", "show", str(ranked[0]["id"]), "--min-users", "2", "--home", cli.home).stdout
    assert f"cluster {ranked[0]['id']}:" in shown and "user:" in shown
    assert "no cluster 999" in cli("clusters", "show", "999", "--home", cli.home, code=1).stderr
    assert cli("cluster", "--k", "zero", "--home", cli.home, code=2)


def test_migration_0003_downgrades_and_upgrades(store):
    from alembic import command

    from curation.store import _alembic_config

    def tables() -> set[str]:
        return set(sa.inspect(store.engine).get_table_names())

    ours = {"clusters", "cluster_assignments", "cluster_history", "failure_scores", "rewards"}
    assert ours <= tables()
    with store.engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert not ours & tables() and "conversations" in tables()
    store.migrate()
    assert ours <= tables()


def test_export_conversations_gains_cluster_and_failure_columns(store, cli, tmp_path):
    X, y = blobs(10, [0, 1], seed=0)
    ids = add_conversations(store, y, "a", failing_topic=1, users=5)
    ingest_records(store, [{"id": "lonely", "messages": [{"role": "user", "content": "hi"},
                                                         {"role": "assistant", "content": "hello"}]}])
    cluster(store, k=2, vectors=(ids, X))
    out = tmp_path / "conv.jsonl"
    cli.json("export", "conversations", "--out", out, "--home", cli.home)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    failing = rows[ids[-1]]
    assert failing["cluster_id"] is not None and failing["cluster_label"] and failing["failure_score"] >= 0.5
    assert failing["signals"][0]["name"] == "thumbs_down" and failing["reward"] is None
    lonely = rows["lonely"]
    assert lonely["cluster_id"] is None and lonely["cluster_label"] is None and lonely["failure_score"] == 0


def test_a_cluster_of_identical_texts_does_not_call_a_copy_novel():
    """Zero spread (identical or templated texts) made the radius the median itself: an exact copy, at similarity
    1.0 against a radius of 1.0000001, was novel. The spread has a floor, so the radius stays below the members."""
    from curation.cluster.identity import MIN_SPREAD, radii

    sim = np.array([1.0000001] * 20 + [0.9, 0.92] * 10, dtype=np.float32)
    labels = np.array([0] * 20 + [1] * 20)
    radius = radii(sim, labels, 2)
    assert radius[0] == pytest.approx(1.0000001 - 3 * MIN_SPREAD) and radius[0] < 0.99 < 1.0
    assert radius[1] == pytest.approx(0.91 - 3 * MIN_SPREAD, abs=1e-3)


def test_clusters_show_says_how_signals_combine_and_marks_novel_members(store, cli):
    X, y = blobs(60, [0, 1, 2], seed=0)
    ids = add_conversations(store, y, "a")
    cluster(store, k=3, vectors=(ids, X))
    X2, y2 = blobs(6, [4], seed=3)
    ids2 = add_conversations(store, y2, "n", failing_topic=4)
    cluster(store, k=3, vectors=(ids + ids2, np.vstack([X, X2])))
    shown = cli("clusters", "show", str(assignments(store)[ids2[1]]), "--min-users", "1").stdout
    assert "failure = 1 − Π(1 − weight·value) over the failure signals that fired" in shown
    line = next(row for row in shown.splitlines() if row.startswith(f"- {ids2[1]} "))
    assert "(novel: unlike this cluster, it waits here for a refit)" in line
    assert "! thumbs_down (weight +0.9, value 0.6667): 1 thumbs down, 0 up" in shown  # (downs + 1) / (downs + ups + 2)
    assert "q-value" in cli("clusters").stdout.splitlines()[0].split()  # one name, as in the README
