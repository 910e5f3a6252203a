"""Clusterers with scikit-learn semantics, and the `k="auto"` criterion.

The orchestrator (`curation.cluster.run`) needs only `fit(X)` and `labels_` from a clusterer (label −1 = noise),
as BERTopic does; it computes centroids itself in the embedding space, so any scikit-learn clusterer fits in.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import HDBSCAN, KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

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


CLEAR_STRUCTURE = 0.25  # a mean silhouette this high means the clusters really are apart


def k_grid(n: int, k_max: int = 500) -> tuple[list[int], list[int]]:
    """(wide, band): candidates from 2 to 2·k₀, and five around the rule of thumb k₀ = √(n/2) (from k₀/2 to 2·k₀),
    at most 500: more clusters than a person can review is not a summary."""
    k0 = np.sqrt(n / 2)
    high = min(k_max, n - 1, max(2, int(round(2 * k0))))
    low = min(high, max(2, int(round(k0 / 2))))
    band = sorted({int(round(k)) for k in np.geomspace(low, high, num=5)})
    # every k up to 10 (few clusters, where one more or less matters most), then geometric steps up to the band
    wide = set(range(2, min(low, 11))) | ({int(round(k)) for k in np.geomspace(11, low, num=4)} if low > 11 else set())
    wide = sorted(wide - set(band))
    return wide, band


def choose_k(X: np.ndarray, random_state: int = 0, sample: int = 10_000) -> int:
    """`k="auto"`: the k with the highest mean cosine silhouette, on a seeded sample, with a guard for overlap.

    When the data has clear clusters (a silhouette of at least 0.25 at some k from 2 to 2·√(n/2)), that k wins.
    Text embeddings usually have no such structure: topics overlap, silhouettes stay near 0, and the maximum then
    sits at k = 2 (code versus everything else), which tells a reader nothing. In that case the best k within a
    factor of two of the rule of thumb √(n/2) is taken. Each candidate is fitted on up to `sample` rows and scored
    on up to 2,000 of them with a short k-means (one init, 20 iterations), so the cost does not grow with n.
    """
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(len(X), size=sample, replace=False)) if len(X) > sample else np.arange(len(X))
    S = X[rows]
    score_rows = rng.choice(len(S), size=min(2_000, len(S)), replace=False)
    wide, band = k_grid(len(X))
    scores = {}
    for k in wide + band:
        if k >= len(S):
            continue
        labels = _kmeans(k, random_state, len(S), quick=True).fit(S).labels_
        if len(np.unique(labels[score_rows])) > 1:
            scores[k] = silhouette_score(S[score_rows], labels[score_rows], metric="cosine")
    if not scores:
        return band[0]
    best = max(scores, key=scores.get)
    if scores[best] >= CLEAR_STRUCTURE:
        return best
    return max((k for k in band if k in scores), key=scores.get, default=best)


def _kmeans(k: int, random_state: int, n: int, quick: bool = False) -> KMeans | MiniBatchKMeans:
    """Full k-means while it is cheap (it finds better minima), mini-batch beyond 10,000 rows.

    Iterations are capped: on overlapping topics k-means creeps for hundreds of iterations while the partition
    hardly changes, and `quick` fits (for choosing k) need only its shape.
    """
    if n <= 10_000:
        return KMeans(n_clusters=k, random_state=random_state, n_init=1 if quick else 3, max_iter=20 if quick else 100)
    return MiniBatchKMeans(n_clusters=k, random_state=random_state, batch_size=2048, n_init=1 if quick else 3,
                           max_iter=3 if quick else 10, max_no_improvement=10, reassignment_ratio=0.01)


class AutoKMeans(ClusterMixin, BaseEstimator):
    """Spherical k-means on L2-normalised vectors; k chosen by `choose_k` when `n_clusters="auto"`.

    For speed the vectors are first projected to `n_components` principal components (fitted on a seeded sample;
    the leading components of sentence embeddings carry the topic), and the k-means is fitted on at most
    `fit_sample` rows, then every row gets its nearest centroid. Time and memory stay flat from thousands to
    millions of rows. `n_components=None` clusters in the full space.
    """

    def __init__(self, n_clusters: int | str = "auto", n_components: int | None = 64, fit_sample: int = 100_000,
                 random_state: int = 0):
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.fit_sample = fit_sample
        self.random_state = random_state

    def fit(self, X: np.ndarray, y=None) -> "AutoKMeans":  # noqa: ANN001
        X = normalise(np.asarray(X, dtype=np.float32))
        rng = np.random.default_rng(self.random_state)
        rows = np.arange(len(X))
        if len(X) > self.fit_sample:
            rows = np.sort(rng.choice(len(X), self.fit_sample, replace=False))
        self.pca_ = None
        if self.n_components and X.shape[1] > self.n_components and len(rows) > self.n_components:
            self.pca_ = PCA(n_components=self.n_components, random_state=self.random_state).fit(X[rows[:20_000]])
        Z = self._project(X)
        k = choose_k(Z, self.random_state) if self.n_clusters == "auto" else int(self.n_clusters)
        k = max(1, min(k, len(X)))
        model = _kmeans(k, self.random_state, len(rows)).fit(Z[rows])
        self.cluster_centers_ = normalise(model.cluster_centers_)
        self.labels_, _ = nearest(Z, self.cluster_centers_)
        self.n_clusters_ = k
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

    def fit(self, X: np.ndarray, y=None) -> "SampledHDBSCAN":  # noqa: ANN001
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


def make_clusterer(algorithm: str, k: int | str, random_state: int) -> BaseEstimator:
    if algorithm == "kmeans":
        return AutoKMeans(n_clusters=k, random_state=random_state)
    if algorithm == "hdbscan":
        return SampledHDBSCAN(random_state=random_state)
    raise ValueError(algorithm)
