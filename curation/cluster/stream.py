"""Clustering past memory: fit on a sample, then assign every vector in chunks streamed from the store.

`curation.cluster.run.cluster` takes this path when a space holds more vectors than `sample_size(n, k)`; at or
below it, everything is loaded and clustered in memory as before. The rule (docs/concepts-failures.md, "Clustering
at scale"): 200 rows per cluster at the finest k considered (k_hi = `k_ceiling(n)` ≤ 500 for k="auto", else k),
at least 100,000 (the rows `AutoKMeans` fits k-means on at any n) and at most 500,000 (750 MB of 384-d float32).

Assignment is a pure function of numpy arrays, so any executor can run it:

    assign_chunk(centroids, radius, X) -> (index, similarity, novel)
    assign_chunks(chunks, centroids, radius=None, executor=None, window=None)
        -> iterator of (ids, (index, similarity, novel)), in chunk order

`executor` is anything with concurrent.futures' `submit(fn, *args) -> Future`. At most `window` chunks (default
2 × workers) are in flight and `READ_AHEAD` more read, so memory stays bounded by chunks × chunk size whatever the
store holds. The default is a
thread pool with one thread per core and BLAS held to one thread each (numpy's matmul releases the GIL).
`RayExecutor` below runs the same function as Ray tasks (`ObjectRef.future()` is a concurrent.futures Future):

    ray.init(address="auto")
    cluster(store, executor=RayExecutor())
"""
from __future__ import annotations

import os
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import numpy as np
from threadpoolctl import threadpool_limits

from curation.cluster.model import k_ceiling, nearest, normalise

ROWS_PER_CLUSTER = 200
SAMPLE_MIN = 100_000
SAMPLE_MAX = 500_000
READ_AHEAD = 2  # chunks read from the store while the caller handles the current one


def sample_size(n: int, k: int | str = "auto") -> int:
    """Rows the clusterer is fitted on; a space with more vectors than this is streamed (see the module docstring)."""
    k_hi = k_ceiling(n) if k == "auto" else int(k)
    return int(min(n, min(SAMPLE_MAX, max(SAMPLE_MIN, ROWS_PER_CLUSTER * k_hi))))


def sample_rows(store: Any, space: str, n: int, size: int, seed: int) -> np.ndarray:
    """A seeded sample of `size` of the space's `n` vectors: positions drawn in id order, their ids found by paging
    through the ids alone, then only those vectors read."""
    from curation.embed.vectors import iter_ids, load_vectors

    positions = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    picked: list[str] = []
    offset = 0
    for ids in iter_ids(store, space):
        lo, hi = np.searchsorted(positions, [offset, offset + len(ids)])
        picked += [ids[p - offset] for p in positions[lo:hi].tolist()]
        offset += len(ids)
    return normalise(load_vectors(store, space, ids=picked)[1])


def assign_chunk(centroids: np.ndarray, radius: np.ndarray | None, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's nearest centroid (cosine), that similarity, and whether it falls below the centroid's radius
    (novel; never without radii)."""
    index, sim = nearest(normalise(X), centroids)
    novel = sim < radius[index] if radius is not None else np.zeros(len(X), dtype=bool)
    return index, sim, novel


def assign_chunks(chunks: Iterable[tuple[Any, np.ndarray]], centroids: np.ndarray, radius: np.ndarray | None = None,
                  executor: Any = None, window: int | None = None) -> Iterator[tuple[Any, tuple[np.ndarray, ...]]]:
    """`assign_chunk` over (payload, X) chunks on `executor`, yielding (payload, result) in chunk order."""
    workers = os.cpu_count() or 1
    window = window or 2 * workers
    own = executor is None
    if own:
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curate-assign")
    pending: deque = deque()
    try:
        # one BLAS thread per worker: the workers already fill the cores
        with threadpool_limits(1 if own else None, user_api="blas"):
            for payload, X in read_ahead(chunks, READ_AHEAD):
                pending.append((payload, executor.submit(assign_chunk, centroids, radius, X)))
                if len(pending) >= window:
                    payload, future = pending.popleft()
                    yield payload, future.result()
            while pending:
                payload, future = pending.popleft()
                yield payload, future.result()
    finally:
        if own:
            executor.shutdown(cancel_futures=True)


def read_ahead(items: Iterable, depth: int) -> Iterator:
    """`items`, produced by one thread up to `depth` ahead: reading the next chunk from the store (the driver releases
    the GIL while it steps) overlaps with what the caller does with this one (writing its assignments)."""
    source, done = iter(items), object()
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-read-ahead")
    try:
        ahead = deque(reader.submit(next, source, done) for _ in range(depth))
        while (item := ahead.popleft().result()) is not done:
            ahead.append(reader.submit(next, source, done))
            yield item
    finally:
        reader.shutdown(cancel_futures=True)


class Picks:
    """Which members label a cluster, chosen while chunks stream past: per cluster the `central` most similar
    members, and a uniform random `central` of the others (the smallest seeded crc32 of the id, so the choice does
    not depend on chunking). Memory: (chunk + 3 × central × k) rows."""

    def __init__(self, k: int, central: int, seed: int = 0):
        self.k, self.central, self.seed = k, central, seed
        self.cluster = np.empty(0, dtype=np.int64)
        self.sim = np.empty(0, dtype=np.float32)
        self.key = np.empty(0, dtype=np.uint32)
        self.ids = np.empty(0, dtype=object)
        self.least_sim = np.full(k, -np.inf, dtype=np.float32)  # while a cluster has fewer picks, anything enters
        self.most_key = np.full(k, np.iinfo(np.uint32).max, dtype=np.uint64) + 1

    def add(self, ids: list[str], index: np.ndarray, sim: np.ndarray) -> None:
        key = np.fromiter((zlib.crc32(i.encode(), self.seed) for i in ids), dtype=np.uint32, count=len(ids))
        # only rows that beat a cluster's current last pick can enter it: a cheap filter before the sort
        rows = np.flatnonzero((sim > self.least_sim[index]) | (key < self.most_key[index]))
        cluster = np.concatenate([self.cluster, index[rows]])
        sims = np.concatenate([self.sim, sim[rows]])
        keys = np.concatenate([self.key, key[rows]])
        keep = _first(cluster, -sims, self.central) | _first(cluster, keys, 2 * self.central)
        self.cluster, self.sim, self.key = cluster[keep], sims[keep], keys[keep]
        self.ids = np.concatenate([self.ids, np.array(ids, dtype=object)[rows]])[keep]
        full = np.bincount(self.cluster, minlength=self.k) >= 2 * self.central
        self.least_sim = np.full(self.k, -np.inf, dtype=np.float32)
        self.most_key = np.full(self.k, np.iinfo(np.uint32).max, dtype=np.uint64) + 1
        top = _first(self.cluster, -self.sim, self.central)
        np.minimum.at(self.least_sim, self.cluster[top], self.sim[top])
        sample = _first(self.cluster, self.key, 2 * self.central)
        most = np.zeros(self.k, dtype=np.uint64)
        np.maximum.at(most, self.cluster[sample], self.key[sample].astype(np.uint64))
        self.least_sim[~full] = -np.inf
        self.most_key[full] = most[full]

    def chosen(self, n_examples: int) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        """({cluster: ids for keywords, most central first}, {cluster: its `n_examples` most central ids})."""
        wanted, examples = {}, {}
        for c in range(self.k):
            members = np.flatnonzero(self.cluster == c)
            central = members[np.argsort(-self.sim[members], kind="stable")][: self.central]
            rest = np.setdiff1d(members, central)
            spread = rest[np.argsort(self.key[rest], kind="stable")][: self.central]
            wanted[c] = self.ids[central].tolist() + self.ids[spread].tolist()
            examples[c] = self.ids[central[:n_examples]].tolist()
        return wanted, examples


def _first(groups: np.ndarray, order: np.ndarray, m: int) -> np.ndarray:
    """Mask of the first `m` rows of each group by `order` (ascending)."""
    rows = np.lexsort((order, groups))
    g = groups[rows]
    rank = np.arange(len(g)) - np.searchsorted(g, g, side="left")
    mask = np.zeros(len(groups), dtype=bool)
    mask[rows[rank < m]] = True
    return mask


class RayExecutor:
    """`submit` for `assign_chunks` (and `cluster(executor=...)`) that runs each chunk as a Ray task on the cluster
    this process is connected to (`ray.init(address=...)` first); install with `pip install 'curate[ray]'`."""

    def __init__(self, num_cpus: float = 1):
        import ray

        self.num_cpus = num_cpus
        self.submitted = 0  # tasks sent to the cluster: what `curate cluster --json` reports
        self._ray = ray
        self._remote: dict = {}

    def submit(self, fn, *args):
        self.submitted += 1
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(num_cpus=self.num_cpus)(fn)
        return self._remote[fn].remote(*args).future()
