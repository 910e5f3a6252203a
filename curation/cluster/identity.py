"""Stable cluster ids across runs: match a new clustering to the stored one by centroid similarity.

The matching is an optimal one-to-one assignment (Hungarian, `scipy.optimize.linear_sum_assignment`) on cosine
similarity between centroids; a pair counts only when its similarity is at least `min_similarity`. Matched clusters
keep their id and history; unmatched new clusters get fresh ids; unmatched old clusters are retired.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

MIN_SIMILARITY = 0.8
# The least spread a cluster's radius assumes (cosine). Without it, a cluster of identical or templated texts
# (spread 0) had its median as radius, and new copies and close paraphrases were novel: 17% of new in-distribution
# sample traffic, exact copies included, against 3% with it, while real off-topic conversations (cosine ≤ 0.65 to
# every centroid) stay 100% novel (tests/test_novelty.py, docs/concepts-failures.md).
MIN_SPREAD = 0.05


def match(old_ids: list[int], old_centroids: np.ndarray, new_centroids: np.ndarray,
          min_similarity: float = MIN_SIMILARITY) -> list[int]:
    """The id for each new centroid: an old id when matched, else a fresh one above every id seen."""
    next_id = max(old_ids, default=0) + 1
    ids = [-1] * len(new_centroids)
    if len(old_ids) and len(new_centroids):
        sim = new_centroids @ old_centroids.T
        # Pairs below the threshold can never match; zeroing them keeps them from steering the other pairs.
        rows, cols = linear_sum_assignment(-np.where(sim >= min_similarity, sim, 0.0))
        for r, c in zip(rows, cols):
            if sim[r, c] >= min_similarity:
                ids[r] = old_ids[c]
    for i in range(len(ids)):
        if ids[i] == -1:
            ids[i], next_id = next_id, next_id + 1
    return ids


def radii(sim: np.ndarray, labels: np.ndarray, k: int, floor: float = 0.3, min_spread: float = MIN_SPREAD) -> np.ndarray:
    """Per cluster, the least similarity a new member may have: 3 robust standard deviations (1.4826·MAD, at least
    `min_spread`) below the members' median similarity to the centroid, and at least `floor`. A new conversation
    below it is novel."""
    out = np.full(k, floor, dtype=np.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    for c in range(k):
        members = sim[order[bounds[c] : bounds[c + 1]]]
        if len(members):
            median = float(np.median(members))
            spread = max(min_spread, 1.4826 * float(np.median(np.abs(members - median))))
            out[c] = max(floor, median - 3 * spread)
    return out


def centroids_of(X: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster labels present, L2-normalised mean vector of each), ignoring noise (−1)."""
    keep = np.flatnonzero(labels >= 0)
    present, index = np.unique(labels[keep], return_inverse=True)
    # A sparse membership matrix times X sums each cluster's rows in one pass (np.add.at is far slower).
    members = sparse.csr_matrix((np.ones(len(keep), dtype=np.float32), (index, keep)), shape=(len(present), len(X)))
    sums = np.asarray(members @ X, dtype=np.float64)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return present, (sums / np.maximum(norms, 1e-12)).astype(np.float32)
