"""Cluster quality on real text: NMI/ARI of `k="auto"` against honest labels, next to plain KMeans and UMAP+HDBSCAN.

    python benchmarks/cluster_quality.py [--sets prompts,conversations,oasst] [--no-umap]

Three labelled sets, each embedded once with the bundled all-MiniLM-L6-v2 (torch, fp32):
- `prompts`: arena-hard-v0.1's 500 prompts, labelled by their 250 named topic clusters (2 prompts per topic).
- `conversations`: the same 500 prompts each with gpt-4-0314's answer, as `curate embed` sees them (view
  `last_turn`), same labels.
- `oasst`: every root → assistant thread of oasst1-en-validation (1,243), as `curate embed` sees them, labelled by
  conversation tree (191 trees; threads of one tree share their opening prompt, so this set is the easiest).
Methods: Curate's default (k=auto spherical k-means on 64 PCA components), scikit-learn KMeans with the same k,
Curate with the true number of labels, and BERTopic's default UMAP(5-d)+HDBSCAN(min_cluster_size=10; noise counted
as one cluster, as BERTopic's topic −1). None of the sets was used to choose the k rule; all are reported.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_throughput import DATA, conversations, read_jsonl


def labelled_sets(wanted: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """{name: (texts, labels)}."""
    from curation.embed.views import last_turn

    questions = read_jsonl(DATA / "arena-hard-v0.1" / "question.jsonl")
    topic = {q["uid"]: q["cluster"] for q in questions}
    out = {}
    if "prompts" in wanted:
        out["prompts"] = ([q["prompt"] for q in questions], [q["cluster"] for q in questions])
    convs = conversations()
    if "conversations" in wanted:
        chosen = [(cid, m) for cid, m in convs if cid in topic]
        out["conversations"] = ([last_turn(m) for _, m in chosen], [topic[cid] for cid, _ in chosen])
    if "oasst" in wanted:
        tree = {m["message_id"]: m["message_tree_id"]
                for m in read_jsonl(DATA / "oasst1-en-validation" / "oasst1-en-validation.jsonl")}
        chosen = [(cid, m) for cid, m in convs if cid in tree]
        out["oasst"] = ([last_turn(m) for _, m in chosen], [tree[cid] for cid, _ in chosen])
    return out


def evaluate(name: str, X: np.ndarray, truth: list[str], umap_too: bool) -> None:
    from curation.cluster import AutoKMeans

    true_k = len(set(truth))
    results = []

    def record(method: str, labels, seconds: float) -> None:
        results.append((method, len(set(labels)), normalized_mutual_info_score(truth, labels),
                        adjusted_rand_score(truth, labels), seconds))

    started = time.perf_counter()
    ours = AutoKMeans(random_state=0).fit(X)
    record("curate default (k=auto)", ours.labels_, time.perf_counter() - started)
    started = time.perf_counter()
    plain = KMeans(n_clusters=ours.n_clusters_, n_init=3, random_state=0).fit(X)
    record(f"KMeans k={ours.n_clusters_}", plain.labels_, time.perf_counter() - started)
    started = time.perf_counter()
    record(f"curate k={true_k} (true count)", AutoKMeans(n_clusters=true_k, random_state=0).fit(X).labels_,
           time.perf_counter() - started)
    if umap_too:
        import umap

        started = time.perf_counter()
        Z = umap.UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=0).fit_transform(X)
        record("UMAP(5-d)+HDBSCAN", HDBSCAN(min_cluster_size=10, copy=True).fit(Z).labels_,
               time.perf_counter() - started)
    print(f"\n{name}: {len(X)} texts, {true_k} labels")
    print(f"{'method':<30} {'clusters':>8} {'NMI':>6} {'ARI':>6} {'seconds':>8}")
    for method, k, nmi, ari, seconds in results:
        print(f"{method:<30} {k:>8} {nmi:>6.3f} {ari:>6.3f} {seconds:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="prompts,conversations,oasst")
    parser.add_argument("--no-umap", action="store_true", help="skip UMAP+HDBSCAN (the slow part)")
    args = parser.parse_args()
    from curation.embed import Embedder

    print(f"load average {os.getloadavg()[0]:.1f} at start")
    embedder = Embedder(backend="torch")
    for name, (texts, truth) in labelled_sets(args.sets.split(",")).items():
        evaluate(name, embedder.encode(texts), truth, not args.no_umap)


if __name__ == "__main__":
    main()
