"""`curate cluster`: assign every embedded conversation to a cluster whose id survives later runs.

A run either *extends* the stored clustering or *refits* it:
- extend: conversations without an assignment join their nearest cluster when their cosine similarity reaches
  that cluster's radius (3 robust standard deviations below its members' median similarity); the rest join it marked `novel`.
- refit: when there is no clustering yet, when `refit=True`, when the embedding space changed, or (with
  `refit="auto"`) when novel conversations exceed `drift` (10%) of all. The new clusters are matched to the old
  ones (`identity.match`), so ids and their history survive.
Every run then relabels the clusters, counts distinct users, and appends each cluster's size and failure rate to
`cluster_history`.

A space with more vectors than `stream.sample_size(n, k)` is never loaded whole: the refit fits on a seeded
sample, then one streamed pass assigns every vector and writes its assignment a chunk at a time; an extend streams
only the conversations without a current assignment (see `curation.cluster.stream`, and its executor hook).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import sqlalchemy as sa

from curation.cluster import stream
from curation.cluster.identity import MIN_SIMILARITY, centroids_of, match, radii
from curation.cluster.llm_labels import make_labeller
from curation.cluster.model import make_clusterer, nearest, normalise
from curation.config import parse_k
from curation.cluster.records import (LABEL_DOCS, N_EXAMPLES, active_clusters, assignments, insert_assignments,
                                      label_texts, user_texts, write_assignments, write_clusters, write_history)
from curation.errors import CurateError
from curation.signals import DEFAULT_THRESHOLD, score_failures
from curation.store import Store
from curation.store.failure_tables import cluster_assignments

DRIFT = 0.1
STREAM_CHUNK = 32_768  # vectors per streamed chunk: 48 MB at 384-d


class ClusterError(CurateError):
    """Clustering cannot run on what the store holds."""


def checked_k(k: int | str) -> int | str:
    """`k` as `parse_k` reads it, or a ClusterError that says what k may be (checked before any work starts)."""
    try:
        return parse_k(k)
    except ValueError as exc:
        raise ClusterError(f"k {exc}") from None


def cluster(store: Store, k: int | str = "auto", algorithm: str = "kmeans", seed: int = 0, *,
            space: str | None = None, vectors: tuple[list[str], np.ndarray] | None = None,
            clusterer: Any = None, reducer: Any = None, labeller: Any = None, refit: bool | str = "auto",
            drift: float = DRIFT, min_similarity: float = MIN_SIMILARITY, score: bool = True,
            threshold: float = DEFAULT_THRESHOLD, progress: bool | None = None, sample: int | None = None,
            executor: Any = None) -> dict:
    """Cluster the embedded conversations and record the result; returns {"clusters", "assigned", "novel", "run_id", …}.

    `clusterer` is any object with `fit(X)` and `labels_` (−1 = noise); `reducer` (optional) any object with
    `fit_transform(X)` applied before clustering; `labeller` any object with `label({id: [texts]})` (see labels.py).
    `vectors=(ids, X)` bypasses the store's embeddings (benchmarks, notebooks). With `score`, failure scores are
    refreshed first so the history records current failure rates. `sample` overrides `stream.sample_size`: a
    store space with more vectors is streamed. `executor` runs the streamed assignment (`stream.assign_chunks`).
    """
    if algorithm not in ("kmeans", "hdbscan"):
        raise ClusterError(f"unknown algorithm {algorithm!r}; use kmeans or hdbscan")
    k = checked_k(k)
    started = time.perf_counter()
    if score:
        score_failures(store, threshold=threshold, progress=progress)
    streamed, ids, X = False, [], None
    if vectors is None:
        from curation.embed import load_vectors, spaces  # imported here so that cluster also works from given vectors
        from curation.embed.vectors import count_vectors

        known = spaces(store)
        space = space or (known[0]["name"] if known else None)
        n = count_vectors(store, space)
        size = sample if sample is not None else stream.sample_size(n, k)
        streamed = n > size
        if not streamed:
            ids, X = load_vectors(store, space)
    else:
        ids, X = list(vectors[0]), np.asarray(vectors[1])
        n = len(ids)
    if not n:
        raise ClusterError("no vectors to cluster; run `curate embed` first")
    space_name = space or "default"
    with store.run("cluster", {"k": k, "algorithm": algorithm, "seed": seed, "space": space_name,
                               "refit": refit, "drift": drift, "n": n}) as run:
        run_id = run.id
        old = active_clusters(store)
        fit = dict(k=k, algorithm=algorithm, seed=seed, clusterer=clusterer, reducer=reducer, old=old, refit=refit,
                   drift=drift, min_similarity=min_similarity, run_id=run_id, space_name=space_name)
        if streamed:
            done = _streamed(store, space, n, size, executor=executor, **fit)
        else:
            done = _in_memory(store, ids, normalise(X), **fit)
        labels = (labeller or make_labeller(store)).label({done["ids_of"][c]: t for c, t in done["texts"].items()})
        write_clusters(store, done["ids_of"], done["centroids"], done["radii"], done["sizes"], labels,
                        done["examples"], space_name, run_id, old)
        write_history(store, run_id, threshold)
        summary = {"clusters": int((done["sizes"] > 0).sum()), "assigned": done["changed"], "novel": done["novel"],
                   "conversations": n, "drift": drift, "refit": done["refitted"], "run_id": run_id,
                   "space": space_name, "streamed": streamed, "sample": size if streamed else n,
                   "seconds": round(time.perf_counter() - started, 3)}
        return run.finish(summary)


def _in_memory(store, ids, X, *, k, algorithm, seed, clusterer, reducer, old, refit, drift, min_similarity, run_id,
               space_name) -> dict:
    compatible = bool(old["ids"]) and old["dim"] == X.shape[1] and old["space"] == {space_name}
    previous = assignments(store)
    index = sim = novel = None
    if compatible and refit is not True:
        index, sim, novel = _extend(X, ids, previous, old)
    if index is None or (refit == "auto" and novel.sum() > drift * len(ids)):
        index, sim, novel, ids_of = _refit(X, k, algorithm, seed, clusterer, reducer, old, min_similarity)
        refitted = True
    else:
        ids_of, refitted = old["ids"], False
    cluster_id = np.asarray(ids_of, dtype=np.int64)[index]
    changed = write_assignments(store, ids, cluster_id, sim, novel, previous, run_id, refitted)
    texts, examples = label_texts(store, ids, index, sim, len(ids_of), seed)
    return {"ids_of": ids_of, "centroids": _centroids(X, index, len(ids_of), old, refitted),
            "radii": radii(sim, index, len(ids_of)), "sizes": np.bincount(index, minlength=len(ids_of)),
            "texts": texts, "examples": examples, "changed": changed, "novel": int(novel.sum()), "refitted": refitted}


class _Drifted(Exception):
    """Novel conversations passed `drift`: the extend's writes are rolled back and the run refits."""


def _streamed(store, space, n, size, *, k, algorithm, seed, clusterer, reducer, old, refit, drift, min_similarity,
              run_id, space_name, executor) -> dict:
    """The in-memory path's steps with the vectors streamed: assignments are written and label members picked a
    chunk at a time; per row only its cluster and similarity stay in memory (8 bytes)."""
    from curation.embed.vectors import find_space

    chosen = find_space(store, space)
    if bool(old["ids"]) and old["dim"] == chosen["dim"] and old["space"] == {space_name} and refit is not True:
        try:
            changed, novel = _extend_streamed(store, space, chosen["id"], old, run_id, executor,
                                              drift * n if refit == "auto" else np.inf)
        except _Drifted:
            pass
        else:
            index, sim, picks = _stored_assignments(store, old["ids"], seed)
            return _streamed_result(store, old["ids"], old["centroids"], index, sim, picks, changed, novel, False)
    S = stream.sample_rows(store, space, n, size, seed)
    model = clusterer if clusterer is not None else make_clusterer(algorithm, k, seed, n_population=n)
    sample_index, _, _, ids_of = _refit(S, k, algorithm, seed, model, reducer, old, min_similarity)
    C = centroids_of(S, sample_index)[1]
    del S
    index, sim = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.float32)
    picks, done = stream.Picks(len(ids_of), LABEL_DOCS // 2, seed), 0
    with store.begin() as conn:
        conn.execute(cluster_assignments.delete())
        for ids, (i, s, _) in stream.assign_chunks(_stream_vectors(store, space), C, None, executor):
            insert_assignments(conn, ids, np.asarray(ids_of, dtype=np.int64)[i], s, None, run_id)
            index[done : done + len(ids)], sim[done : done + len(ids)] = i, s
            picks.add(ids, i, s)
            done += len(ids)
    return _streamed_result(store, ids_of, C, index[:done], sim[:done], picks, done, 0, True)


def _streamed_result(store, ids_of, centroids, index, sim, picks, changed, novel, refitted) -> dict:
    wanted, examples = picks.chosen(N_EXAMPLES)
    text_of_id = user_texts(store, [cid for group in wanted.values() for cid in group])
    return {"ids_of": ids_of, "centroids": centroids, "radii": radii(sim, index, len(ids_of)),
            "sizes": np.bincount(index, minlength=len(ids_of)), "examples": examples,
            "texts": {c: [text_of_id[i] for i in group if i in text_of_id] for c, group in wanted.items()},
            "changed": changed, "novel": novel, "refitted": refitted}


def _stream_vectors(store: Store, space: str | None, where=None):
    from curation.embed.vectors import iter_vectors

    return iter_vectors(store, space, chunk=STREAM_CHUNK, where=where)


def _extend_streamed(store, space, space_id, old, run_id, executor, limit) -> tuple[int, int]:
    """Stream only the conversations without an assignment to an active cluster; (written, novel in all)."""
    from curation.store.embedding_tables import embeddings

    held = sa.exists().where(cluster_assignments.c.conversation_id == embeddings.c.conversation_id,
                             cluster_assignments.c.cluster_id.in_(old["ids"]))
    in_space = sa.select(embeddings.c.conversation_id).where(embeddings.c.space_id == space_id)
    with store.connect() as conn:
        novel = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(cluster_assignments.c.novel), 0)).where(
            cluster_assignments.c.cluster_id.in_(old["ids"]),
            cluster_assignments.c.conversation_id.in_(in_space))).scalar_one()
    if novel > limit:
        raise _Drifted
    written = 0
    ids_of = np.asarray(old["ids"], dtype=np.int64)
    with store.begin() as conn:
        conn.execute(cluster_assignments.delete().where(cluster_assignments.c.cluster_id.not_in(old["ids"]),
                                                        cluster_assignments.c.conversation_id.in_(in_space)))
        for ids, (i, s, v) in stream.assign_chunks(_stream_vectors(store, space, where=~held), old["centroids"],
                                                   old["radius"], executor):
            insert_assignments(conn, ids, ids_of[i], s, v, run_id)
            written, novel = written + len(ids), novel + int(v.sum())
            if novel > limit:
                raise _Drifted
    return written, int(novel)


def _stored_assignments(store, ids_of, seed):
    """Every current assignment to the clusters `ids_of`, a page at a time: (cluster index, similarity, picks)."""
    position = {cid: i for i, cid in enumerate(ids_of)}
    index, sim = [], []
    picks = stream.Picks(len(ids_of), LABEL_DOCS // 2, seed)
    last = None
    query = sa.select(cluster_assignments.c.conversation_id, cluster_assignments.c.cluster_id,
                      cluster_assignments.c.similarity).order_by(cluster_assignments.c.conversation_id)
    while True:
        page = query if last is None else query.where(cluster_assignments.c.conversation_id > last)
        with store.connect() as conn:
            rows = conn.execute(page.limit(STREAM_CHUNK)).all()
        if not rows:
            break
        i = np.fromiter((position.get(r[1], -1) for r in rows), dtype=np.int32, count=len(rows))
        s = np.fromiter((r[2] or 0.0 for r in rows), dtype=np.float32, count=len(rows))
        keep = i >= 0
        picks.add([r[0] for r, k in zip(rows, keep) if k], i[keep], s[keep])
        index.append(i[keep])
        sim.append(s[keep])
        last = rows[-1][0]
    return np.concatenate(index), np.concatenate(sim), picks


def _extend(X: np.ndarray, ids: list[str], previous: dict, old: dict):
    """Keep stored assignments; put new conversations in their nearest cluster, novel when outside its radius."""
    position = {cid: i for i, cid in enumerate(old["ids"])}
    index = np.empty(len(ids), dtype=np.int32)
    sim = np.empty(len(ids), dtype=np.float32)
    novel = np.zeros(len(ids), dtype=bool)
    fresh = []
    for i, cid in enumerate(ids):
        kept = previous.get(cid)
        if kept is not None and kept[0] in position:
            index[i], sim[i], novel[i] = position[kept[0]], kept[1] or 0.0, bool(kept[2])
        else:
            fresh.append(i)
    if fresh:
        rows = np.asarray(fresh)
        index[rows], sim[rows] = nearest(X[rows], old["centroids"])
        novel[rows] = sim[rows] < old["radius"][index[rows]]
    return index, sim, novel


def _refit(X, k, algorithm, seed, clusterer, reducer, old, min_similarity):
    model = clusterer if clusterer is not None else make_clusterer(algorithm, k, seed)
    Z = reducer.fit_transform(X) if reducer is not None else X
    labels = np.asarray(model.fit(Z).labels_)
    if (labels >= 0).sum() == 0:
        labels = np.zeros(len(X), dtype=np.int64)  # all noise: one cluster is the honest answer
    present, C = centroids_of(X, labels)
    index = np.searchsorted(present, labels).astype(np.int32)
    noise = np.flatnonzero(labels < 0)
    if len(noise):  # noise and unsampled rows join their nearest cluster
        index[noise] = nearest(X[noise], C)[0]
    sim = _own_similarity(X, C, index)
    used = np.unique(index)
    C = C[used]
    index = np.searchsorted(used, index).astype(np.int32)
    if old["ids"] and old["dim"] == X.shape[1]:
        ids_of = match(old["ids"], old["centroids"], C, min_similarity)
    else:
        ids_of = match(old["ids"], np.zeros((0, X.shape[1]), np.float32), C, min_similarity)
    return index, sim, np.zeros(len(X), dtype=bool), ids_of


def _own_similarity(X: np.ndarray, C: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each row's cosine to its own cluster's centroid, in chunks (O(n·d), not O(n·k·d))."""
    sim = np.empty(len(X), dtype=np.float32)
    for start in range(0, len(X), 65_536):
        sim[start : start + 65_536] = np.einsum("ij,ij->i", X[start : start + 65_536], C[index[start : start + 65_536]])
    return sim


def _centroids(X, index, k, old, refitted):
    """Refit: members' mean. Extend: the stored centroid, so a cluster's meaning does not creep between refits."""
    if not refitted:
        return old["centroids"]
    present, C = centroids_of(X, index)
    out = np.zeros((k, X.shape[1]), dtype=np.float32)
    out[present] = C
    return out
