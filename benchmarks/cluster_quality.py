"""Cluster quality on real prompts: NMI/ARI against arena-hard-v0.1's 250 named topic clusters (500 prompts).

    python benchmarks/cluster_quality.py

Compares Curate's default (k=auto spherical k-means on 64 PCA components), plain scikit-learn KMeans (with the same
k, and with the true 250), and BERTopic's default UMAP(5-d)+HDBSCAN(min_cluster_size=10; noise counted as one
cluster, as BERTopic's topic −1). Prompts are embedded once with the bundled all-MiniLM-L6-v2 (torch, fp32).
Note: 2 prompts per topic is far finer than any k-chooser aims for; this set is reported, not tuned to.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "arena-hard-v0.1" / "question.jsonl"


def main() -> None:
    from curation.cluster import AutoKMeans
    from curation.embed import Embedder

    rows = [json.loads(line) for line in DATA.open()]
    truth = [r["cluster"] for r in rows]
    X = Embedder(backend="torch").encode([r["prompt"] for r in rows])
    results = []

    def record(name: str, labels, seconds: float) -> None:
        results.append((name, len(set(labels)), normalized_mutual_info_score(truth, labels),
                        adjusted_rand_score(truth, labels), seconds))

    started = time.perf_counter()
    ours = AutoKMeans(random_state=0).fit(X)
    record("curate default (k=auto)", ours.labels_, time.perf_counter() - started)
    for k in (ours.n_clusters_, len(set(truth))):
        started = time.perf_counter()
        record(f"KMeans k={k}", KMeans(n_clusters=k, n_init=3, random_state=0).fit(X).labels_, time.perf_counter() - started)
    started = time.perf_counter()
    record(f"curate k={len(set(truth))}", AutoKMeans(n_clusters=len(set(truth)), random_state=0).fit(X).labels_,
           time.perf_counter() - started)
    import umap

    started = time.perf_counter()
    Z = umap.UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=0).fit_transform(X)
    record("UMAP(5-d)+HDBSCAN", HDBSCAN(min_cluster_size=10, copy=True).fit(Z).labels_, time.perf_counter() - started)
    print(f"arena-hard-v0.1: {len(rows)} prompts, {len(set(truth))} named topics")
    print(f"{'method':<28} {'clusters':>8} {'NMI':>6} {'ARI':>6} {'seconds':>8}")
    for name, k, nmi, ari, seconds in results:
        print(f"{name:<28} {k:>8} {nmi:>6.3f} {ari:>6.3f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
