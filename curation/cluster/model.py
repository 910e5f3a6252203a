"""Clusterers with scikit-learn semantics, and the `k="auto"` criterion.

The orchestrator (`curation.cluster.run`) needs only `fit(X)` and `labels_` from a clusterer (label −1 = noise),
as BERTopic does; it computes centroids itself in the embedding space, so any scikit-learn clusterer fits in.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import HDBSCAN, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from curation.cluster.identity import centroids_of

CHUNK = 65_536


def normalise(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32. Already-normalised float32 input is returned as is: at a million
    rows every copy of the matrix costs 1.5 GB."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    if np.allclose(norms, 1.0, atol=1e-3):
        return X
    return X / np.maximum(norms, 1e-12)[:, None]


def nearest(X: np.ndarray, centroids: np.ndarray, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's most similar centroid and that cosine similarity, in chunks so memory stays flat."""
    index = np.empty(len(X), dtype=np.int32)
    sim = np.empty(len(X), dtype=np.float32)
    C = centroids.astype(np.float32, copy=False).T
    for start in range(0, len(X), chunk):
        S = X[start : start + chunk] @ C
        index[start : start + chunk] = S.argmax(axis=1)
        sim[start : start + chunk] = S[np.arange(len(S)), index[start : start + chunk]]
    return index, sim


K_MAX = 500  # more clusters than a person can review is not a summary
SCORE_ROWS = 2_000
ROWS_PER_CLUSTER = 20


def k_ceiling(n: int, k_max: int = K_MAX) -> int:
    """The finest granularity `k="auto"` considers: √(2n) clusters (about √(n/2) conversations each), at most 500."""
    return int(min(k_max, max(2, round(np.sqrt(2 * n))), max(2, n // 2)))


def choose_k(X: np.ndarray, random_state: int = 0, sample: int = 10_000) -> int:
    """`k="auto"`: the k whose clusters stand out most above chance, from 2 up to `k_ceiling(n)` (see `_auto_k`)."""
    return _auto_k(X, random_state, sample)[0]


def _auto_k(X: np.ndarray, random_state: int = 0, sample: int = 10_000,
            n: int | None = None) -> tuple[int, np.ndarray]:
    """(k, its centroids on the sample): over-cluster once, merge, and score every level of the merge tree.

    1. A seeded sample of up to `sample` rows (and at most 20 per cluster) is over-clustered by k-means into
       k_hi = `k_ceiling(n)` clusters.
    2. Ward's method (weighted by cluster size) merges those centroids step by step into a tree, so every
       k ≤ k_hi is one cut of it: all candidates reuse the one k-means fit instead of each needing its own.
    3. Each cut is scored by its mean cosine silhouette on 2,000 rows, minus the silhouette that the same procedure
       gets on structureless data: Gaussian noise with the sample's per-component mean and spread. The k with the
       largest excess wins. The subtraction matters on text: any split of a high-dimensional cloud in two has a
       positive silhouette, so the raw silhouette favours k = 2 even when the data has no two groups, while the
       excess peaks where the data has more structure than noise would.
    Where topics overlap (usual for text embeddings) the excess keeps growing with k, and k ends near k_hi:
    clusters of about √(n/2) conversations. Clear groups (a silhouette far above chance) end it sooner.
    `n` is the number of conversations X stands for when X is itself a sample of them (default: len(X)).
    """
    rng = np.random.default_rng(random_state)
    k_hi = k_ceiling(n or len(X))
    sample = min(sample, ROWS_PER_CLUSTER * k_hi)  # enough rows to place k_hi centres, no more: cost ∝ rows · k_hi
    rows = np.sort(rng.choice(len(X), size=sample, replace=False)) if len(X) > sample else np.arange(len(X))
    S = np.asarray(X[rows], dtype=np.float32)
    if len(S) < 4:
        return max(1, len(S)), normalise(S) if len(S) else S
    score_rows = rng.choice(len(S), size=min(SCORE_ROWS, len(S)), replace=False)
    grid = sorted({int(round(k)) for k in np.geomspace(2, k_hi, num=28)})
    real, cut_centroids = _tree_silhouettes(S, k_hi, grid, score_rows, random_state)
    noise = rng.normal(size=S.shape).astype(np.float32) * S.std(axis=0) + S.mean(axis=0)
    null, _ = _tree_silhouettes(normalise(noise), k_hi, grid, score_rows, random_state)
    scored = [k for k in grid if k in real and k in null]
    if not scored:
        return k_hi, cut_centroids.get(k_hi, normalise(S[:k_hi]))
    k = max(scored, key=lambda k: (real[k] - null[k], -k))
    return k, cut_centroids[k]


def _tree_silhouettes(S: np.ndarray, k_hi: int, grid: list[int], score_rows: np.ndarray,
                      random_state: int) -> tuple[dict[int, float], dict[int, np.ndarray]]:
    """Silhouette of each grid cut of the Ward tree over a k_hi-means fit of S, and each cut's centroids."""
    init = _seeds(S, k_hi, random_state)
    fit = KMeans(n_clusters=k_hi, init=init, n_init=1, max_iter=20, random_state=random_state).fit(S)
    micro = fit.labels_
    sizes = np.bincount(micro, minlength=k_hi).astype(np.float64)
    R = S[score_rows]
    distances = np.clip(1.0 - R @ R.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    scores, centroids = {}, {}
    for k, group in _ward_cuts(fit.cluster_centers_, sizes, grid).items():
        labels = group[micro]
        sums = np.zeros((k, S.shape[1]), dtype=np.float64)
        np.add.at(sums, group, fit.cluster_centers_ * sizes[:, None])
        centroids[k] = normalise(sums)
        if len(np.unique(labels[score_rows])) > 1:
            scores[k] = _silhouette(distances, labels[score_rows])
    return scores, centroids


def _seeds(S: np.ndarray, k: int, random_state: int) -> np.ndarray:
    """Greedy k-means++ seeding (D² sampling; of 2 + ⌊ln k⌋ candidates per step the one that lowers the total most),
    as scikit-learn's, with the candidates scored in one product per step: scikit-learn's per-step overhead
    dominates at k in the hundreds."""
    rng = np.random.default_rng(random_state)
    trials = 2 + int(np.log(k))
    sq = np.einsum("ij,ij->i", S, S)
    centres = np.empty((k, S.shape[1]), dtype=S.dtype)
    centres[0] = S[rng.integers(len(S))]
    # hundreds of small products in a row: BLAS threads waking for each one cost more than the product itself,
    # and far more when other processes hold the cores
    with threadpool_limits(1, user_api="blas"):
        d2 = np.maximum(sq - 2 * S @ centres[0] + centres[0] @ centres[0], 0)
        for i in range(1, k):
            total = d2.sum()
            if total <= 0:  # fewer distinct rows than k: any row will do
                centres[i] = S[rng.integers(len(S))]
                continue
            picks = np.minimum(np.searchsorted(np.cumsum(d2), rng.random(trials) * total), len(S) - 1)
            cand = S[picks]
            dist = np.maximum(sq[:, None] - 2 * S @ cand.T + sq[picks][None, :], 0)
            options = np.minimum(d2[:, None], dist)
            best = int(np.argmin(options.sum(axis=0)))
            centres[i] = cand[best]
            d2 = options[:, best].copy()
    return centres


def _silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a precomputed distance matrix, as scikit-learn's `silhouette_score` computes it (a
    singleton scores 0), with one sparse product per labelling instead of a pass per row."""
    _, labels = np.unique(labels, return_inverse=True)
    n, k = len(labels), labels.max() + 1
    members = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    sums = np.asarray(members @ distances).T  # n × k: each row's summed distance to each cluster
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    own = counts[labels]
    a = sums[np.arange(n), labels] / np.maximum(own - 1, 1)
    means = sums / counts
    means[np.arange(n), labels] = np.inf
    b = means.min(axis=1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def _ward_cuts(C: np.ndarray, sizes: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Ward agglomeration of centroids weighted by their sizes; for each k in `ks`, the group (0…k−1) of every
    centroid. Ward's merge cost of groups a, b is |a||b|/(|a|+|b|)·‖c_a − c_b‖²: the growth of the within sum of squares."""
    C = C.astype(np.float64)
    w = np.maximum(sizes, 1e-9)
    k_hi = len(C)
    sq = np.einsum("ij,ij->i", C, C)
    cost = np.maximum(sq[:, None] + sq[None, :] - 2 * C @ C.T, 0.0) * np.outer(w, w) / (w[:, None] + w[None, :])
    np.fill_diagonal(cost, np.inf)
    parent = np.arange(k_hi)
    alive = np.ones(k_hi, dtype=bool)
    wanted, out = set(ks), {}
    for k in range(k_hi, 1, -1):
        if k in wanted:
            roots = parent.copy()
            while not np.array_equal(roots[roots], roots):
                roots = roots[roots]
            out[k] = np.unique(roots, return_inverse=True)[1]
        if k == min(wanted):
            break
        a, b = divmod(int(np.argmin(cost)), k_hi)
        C[a] = (w[a] * C[a] + w[b] * C[b]) / (w[a] + w[b])
        w[a] += w[b]
        parent[b], alive[b] = a, False
        cost[b, :] = cost[:, b] = np.inf
        row = np.einsum("ij,ij->i", C - C[a], C - C[a]) * w * w[a] / (w + w[a])
        row[~alive] = np.inf
        row[a] = np.inf
        cost[a, :] = cost[:, a] = row
    return out


def _kmeans(k: int, random_state: int, n: int) -> KMeans | MiniBatchKMeans:
    """For a k given by the caller: full k-means while it is cheap (it finds better minima), mini-batch beyond
    10,000 rows. Iterations are capped: on overlapping topics k-means creeps for hundreds of iterations while the
    partition hardly changes."""
    if n <= 10_000:
        return KMeans(n_clusters=k, random_state=random_state, n_init=3, max_iter=100)
    return MiniBatchKMeans(n_clusters=k, random_state=random_state, batch_size=2048, n_init=3, max_iter=10,
                           max_no_improvement=10, reassignment_ratio=0.01)


def _refine(Z: np.ndarray, centres: np.ndarray, iterations: int = 3) -> np.ndarray:
    """A few spherical k-means (Lloyd) steps on all fit rows from centres found on a sample; clusters left empty
    keep their centre."""
    centres = normalise(centres)
    for _ in range(iterations):
        present, means = centroids_of(Z, nearest(Z, centres)[0])
        centres = centres.copy()
        centres[present] = means
    return centres


class AutoKMeans(ClusterMixin, BaseEstimator):
    """Spherical k-means on L2-normalised vectors; k chosen by `choose_k` when `n_clusters="auto"`.

    For speed the vectors are first projected to `n_components` principal components (fitted on a seeded sample
    of 20,000 rows; the leading components of sentence embeddings carry the topic), and the k-means is fitted on at
    most `fit_sample` rows, then every row gets its nearest centroid. With `"auto"`, the centroids of the chosen
    cut (see `_auto_k`) start three Lloyd steps on the fit rows, so no second k-means from scratch is needed.
    Time and memory stay flat from thousands to millions of rows. `n_components=None` clusters in the full space.
    `n_population`: when X is a sample of a larger set (`curation.cluster.stream`), that set's size, so that
    `"auto"` considers the granularity the whole set allows.
    """

    def __init__(self, n_clusters: int | str = "auto", n_components: int | None = 64, fit_sample: int = 100_000,
                 random_state: int = 0, n_population: int | None = None):
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.fit_sample = fit_sample
        self.random_state = random_state
        self.n_population = n_population

    def fit(self, X: np.ndarray, y=None) -> "AutoKMeans":
        X = normalise(np.asarray(X, dtype=np.float32))
        rng = np.random.default_rng(self.random_state)
        rows = np.arange(len(X))
        if len(X) > self.fit_sample:
            rows = np.sort(rng.choice(len(X), self.fit_sample, replace=False))
        self.pca_ = None
        if self.n_components and X.shape[1] > self.n_components and len(rows) > self.n_components:
            fit_rows = np.sort(rng.choice(rows, 20_000, replace=False)) if len(rows) > 20_000 else rows
            self.pca_ = PCA(n_components=self.n_components, svd_solver="covariance_eigh").fit(X[fit_rows])
        Z = self._project(X)
        if self.n_clusters == "auto":
            centres = _refine(Z[rows], _auto_k(Z, self.random_state, n=self.n_population)[1])
        else:
            k = max(1, min(int(self.n_clusters), len(X)))
            centres = _kmeans(k, self.random_state, len(rows)).fit(Z[rows]).cluster_centers_
        self.cluster_centers_ = normalise(centres)
        self.labels_, _ = nearest(Z, self.cluster_centers_)
        self.n_clusters_ = len(self.cluster_centers_)
        return self

    def _project(self, X: np.ndarray) -> np.ndarray:
        if self.pca_ is None:
            return X
        out = np.empty((len(X), self.pca_.n_components_), dtype=np.float32)
        for start in range(0, len(X), CHUNK):
            out[start : start + CHUNK] = self.pca_.transform(X[start : start + CHUNK])
        return normalise(out)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return nearest(self._project(normalise(np.asarray(X, dtype=np.float32))), self.cluster_centers_)[0]


class SampledHDBSCAN(ClusterMixin, BaseEstimator):
    """scikit-learn's HDBSCAN on a seeded sample of at most `fit_sample` rows (it is super-linear in n).

    Rows outside the sample get label −1 here; the orchestrator assigns them, and noise, to the nearest centroid.
    `min_cluster_size="auto"` is max(5, sample size / 200).
    """

    def __init__(self, min_cluster_size: int | str = "auto", fit_sample: int = 20_000, random_state: int = 0):
        self.min_cluster_size = min_cluster_size
        self.fit_sample = fit_sample
        self.random_state = random_state

    def fit(self, X: np.ndarray, y=None) -> "SampledHDBSCAN":
        X = normalise(np.asarray(X, dtype=np.float32))
        rows = np.arange(len(X))
        if len(X) > self.fit_sample:
            rows = np.sort(np.random.default_rng(self.random_state).choice(len(X), self.fit_sample, replace=False))
        size = max(5, len(rows) // 200) if self.min_cluster_size == "auto" else int(self.min_cluster_size)
        # On unit vectors Euclidean distance is a monotone function of cosine, and it is what HDBSCAN's trees index.
        sample_labels = HDBSCAN(min_cluster_size=min(size, len(rows)), min_samples=min(5, len(rows)), copy=True).fit(X[rows]).labels_
        self.labels_ = np.full(len(X), -1, dtype=np.int32)
        self.labels_[rows] = sample_labels
        return self


def make_clusterer(algorithm: str, k: int | str, random_state: int, n_population: int | None = None) -> BaseEstimator:
    if algorithm == "kmeans":
        return AutoKMeans(n_clusters=k, random_state=random_state, n_population=n_population)
    if algorithm == "hdbscan":
        return SampledHDBSCAN(random_state=random_state)
    raise ValueError(algorithm)
