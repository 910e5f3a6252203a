"""Clustering past memory (curation.cluster.stream): a small forced sample size makes a few thousand stored vectors
take the streamed path, which must give what the in-memory path gives."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.metrics import normalized_mutual_info_score as nmi

import curation.embed.vectors as vectors_module
from curation.cluster import cluster, rank_clusters
from curation.cluster import run as run_module
from curation.cluster.stream import READ_AHEAD, Picks, assign_chunk, assign_chunks, sample_size
from curation.embed.vectors import ensure_space, write_vectors
from curation.store.failure_tables import cluster_assignments, clusters
from tests.test_cluster import add_conversations, assignments, blobs

SPACE = "test|thread|generated"
TOPICS = list(range(8))


def stored(store, n_per: int, topics: list[int], prefix: str, seed: int, failing_topic: int | None = None):
    X, y = blobs(n_per, topics, seed=seed, noise=0.08)
    ids = add_conversations(store, y, prefix, failing_topic=failing_topic)
    space_id = ensure_space(store, SPACE, "test", "thread", "generated", X.shape[1], "setup")
    write_vectors(store, space_id, [(cid, cid, x) for cid, x in zip(ids, X)], "setup")
    return ids, y


def labels_of(store, ids):
    got = assignments(store)
    return [got[i] for i in ids]


def test_sample_size_rule():
    assert sample_size(50_000) == 50_000  # at or below the sample: in memory, as before
    assert sample_size(10_000_000) == 100_000  # 200 rows × k_hi 500
    assert sample_size(10_000_000, k=2_000) == 400_000
    assert sample_size(10_000_000, k=10_000) == 500_000  # the cap


def test_chunked_assignment_equals_one_shot_and_keeps_a_bounded_window():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5_000, 32)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    C = X[rng.choice(len(X), 40, replace=False)]
    radius = np.full(40, 0.3, dtype=np.float32)
    whole = assign_chunk(C, radius, X)
    produced, ahead = [0], []

    def chunks():
        for start in range(0, len(X), 300):
            produced[0] += 1
            yield start, X[start : start + 300]

    for executor in (None, ThreadPoolExecutor(max_workers=3)):
        produced[0], parts = 0, []
        for start, result in assign_chunks(chunks(), C, radius, executor=executor, window=4):
            ahead.append(produced[0] - len(parts))
            parts.append((start, result))
        assert [s for s, _ in parts] == list(range(0, len(X), 300))  # in chunk order
        assert_same_assignment([r for _, r in parts], whole)
        assert max(ahead) <= 4 + READ_AHEAD  # never more than the window (and the read-ahead) past what was consumed
    assert 0 < whole[2].sum() < len(X)  # some rows are novel against radius 0.3, most are not


def test_picks_are_the_most_central_and_a_random_rest_whatever_the_chunking():
    rng = np.random.default_rng(1)
    index = rng.integers(0, 5, size=2_000)
    sim = rng.random(2_000).astype(np.float32)
    ids = [f"c{i}" for i in range(2_000)]
    one, many = Picks(5, 10, seed=3), Picks(5, 10, seed=3)
    one.add(ids, index, sim)
    for start in range(0, 2_000, 137):
        many.add(ids[start : start + 137], index[start : start + 137], sim[start : start + 137])
    assert one.chosen(4) == many.chosen(4)
    wanted, examples = one.chosen(4)
    for c in range(5):
        members = np.flatnonzero(index == c)
        top = [ids[i] for i in members[np.argsort(-sim[members])][:10]]
        assert wanted[c][:10] == top and examples[c] == top[:4]
        assert len(set(wanted[c])) == 20 and set(wanted[c]) <= {ids[i] for i in members}


def test_streamed_path_clusters_as_well_as_in_memory_without_loading_every_vector(store, monkeypatch):
    ids, y = stored(store, 300, TOPICS, "a", seed=0, failing_topic=3)
    in_memory = cluster(store, score=True)
    assert not in_memory["streamed"]
    reference = nmi(y, labels_of(store, ids))

    seen, chunk_rows = [], 256
    loader, iterator = vectors_module.load_vectors, vectors_module.iter_vectors

    def only_the_sample(store, space=None, ids=None):
        assert ids is not None and len(ids) <= 600, "the streamed path loaded every vector"
        return loader(store, space, ids)

    def recorded(*args, **kwargs):
        for page_ids, X in iterator(*args, **kwargs):
            seen.append(len(X))
            yield page_ids, X

    monkeypatch.setattr(vectors_module, "load_vectors", only_the_sample)
    monkeypatch.setattr(vectors_module, "iter_vectors", recorded)
    monkeypatch.setattr(run_module, "STREAM_CHUNK", chunk_rows)
    streamed = cluster(store, refit=True, sample=600)
    assert streamed["streamed"] and streamed["sample"] == 600 and streamed["assigned"] == len(ids)
    assert max(seen) <= chunk_rows and sum(seen) == len(ids)
    assert nmi(y, labels_of(store, ids)) >= reference - 0.03 and reference > 0.9
    rows = rank_clusters(store)
    assert sum(r["size"] for r in rows) == len(ids)
    top = rows[0]  # the failing topic ranks first, labelled by its own words, with examples from it
    assert top["significant"] and "tax" in top["label"] + " ".join(top["keywords"])
    assert top["examples"] and all(y[ids.index(e["id"])] == 3 for e in top["examples"])
    with store.connect() as conn:
        radii = conn.execute(sa.select(clusters.c.radius).where(clusters.c.retired_run_id.is_(None))).scalars().all()
        n_users = conn.execute(sa.select(clusters.c.n_users).where(clusters.c.retired_run_id.is_(None))).scalars().all()
    assert all(0.3 <= r < 1 for r in radii) and max(n_users) == 10


def test_identities_survive_a_streamed_refit_and_extend_marks_novelty(store):
    ids, y = stored(store, 300, TOPICS, "a", seed=0)
    first = cluster(store, sample=600)
    assert first["streamed"] and first["refit"]
    before = assignments(store)
    again = cluster(store, refit=True, sample=600, seed=1)  # another sample, the same topics: the same ids
    after = assignments(store)
    assert again["refit"] and np.mean([before[i] == after[i] for i in ids]) > 0.97

    more, _ = stored(store, 10, TOPICS, "b", seed=5)  # more of the same: they join, not novel
    off, _ = stored(store, 20, [9], "n", seed=6)  # 20 off-topic (< 10% of all): novel, no refit
    extended = cluster(store, sample=600)
    assert extended["streamed"] and not extended["refit"] and extended["assigned"] == len(more) + len(off)
    with store.connect() as conn:
        novel = set(conn.execute(sa.select(cluster_assignments.c.conversation_id)
                                 .where(cluster_assignments.c.novel == 1)).scalars())
    assert set(off) <= novel and len(novel & set(more)) <= 1 and assignments(store)[ids[0]] == after[ids[0]]

    stored(store, 300, [9], "m", seed=7)  # now 320 of 2,820 off-topic: past the 10% drift, the run refits
    drifted = cluster(store, sample=600)
    assert drifted["refit"] and drifted["novel"] == 0
    final = assignments(store)
    assert np.mean([final[i] == after[i] for i in ids]) > 0.97  # the old topics kept their ids through the refit


@pytest.mark.parametrize("algorithm", ["hdbscan"])
def test_streamed_hdbscan_assigns_every_row(store, algorithm):
    ids, y = stored(store, 200, TOPICS[:5], "a", seed=2)
    result = cluster(store, algorithm=algorithm, sample=400)
    assert result["streamed"] and result["assigned"] == len(ids)
    assert nmi(y, labels_of(store, ids)) > 0.8


def assert_same_assignment(parts, whole):
    """Chunked results equal the one-shot ones: the same centroid and novelty for every row, exactly; the similarity
    to float32 precision, since BLAS picks its kernel by matrix shape and on some CPUs (AVX2) a 300-row product rounds
    its last bit differently from a 5,000-row one."""
    index, sim, novel = (np.concatenate([p[k] for p in parts]) for k in range(3))
    assert np.array_equal(index, whole[0]) and np.array_equal(novel, whole[2])
    np.testing.assert_allclose(sim, whole[1], rtol=0, atol=1e-6)


def normalise_rows(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)
