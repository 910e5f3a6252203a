"""Cluster quality on real text: NMI/ARI of `k="auto"` against honest labels, per view, next to plain KMeans.

    python benchmarks/cluster_quality.py [--sets arena,oasst] [--views request,last_turn,thread] [--umap]

Two labelled sets, each embedded with the bundled all-MiniLM-L6-v2 (torch, fp32) once per view (what text of a
conversation is embedded, curation.embed.views):
- `arena`: arena-hard-v0.1's 500 prompts each with gpt-4-0314's answer, labelled by their 250 named topic clusters
  (2 prompts per topic).
- `oasst`: every root → assistant thread of oasst1-en-validation (1,243), labelled by conversation tree (191 trees,
  weak labels: threads of one tree share their opening prompt, so `thread` is favoured here by construction).
Views: `request` (the last user message alone), `last_turn` (that message plus the reply), `thread` (every turn).
k rules: Curate's default (k=auto spherical k-means on 64 PCA components), the rule of thumb k = sqrt(n/2), and
Curate told the true number of labels (a ceiling, not a rule); plain scikit-learn KMeans with the auto k as a
reference; with --umap, BERTopic's default UMAP(5-d)+HDBSCAN(min_cluster_size=10; noise as one cluster).
The default view is chosen on the average NMI of k=auto over the sets, printed last; no set alone decides it.
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


def labelled_sets(wanted: list[str]) -> dict[str, tuple[list[list[dict]], list[str]]]:
    """{name: (conversations as chat messages, labels)}."""
    questions = read_jsonl(DATA / "arena-hard-v0.1" / "question.jsonl")
    topic = {q["uid"]: q["cluster"] for q in questions}
    convs = conversations()
    out = {}
    if "arena" in wanted:
        chosen = [(cid, m) for cid, m in convs if cid in topic]
        out["arena"] = ([m for _, m in chosen], [topic[cid] for cid, _ in chosen])
    if "oasst" in wanted:
        tree = {m["message_id"]: m["message_tree_id"]
                for m in read_jsonl(DATA / "oasst1-en-validation" / "oasst1-en-validation.jsonl")}
        chosen = [(cid, m) for cid, m in convs if cid in tree]
        out["oasst"] = ([m for _, m in chosen], [tree[cid] for cid, _ in chosen])
    return out


def evaluate(name: str, X: np.ndarray, truth: list[str], umap_too: bool) -> float:
    """Print each method's NMI/ARI; return the NMI of Curate's default (k=auto)."""
    from curation.cluster import AutoKMeans

    true_k = len(set(truth))
    results = []

    def record(method: str, labels, seconds: float) -> None:
        results.append((method, len(set(labels)), normalized_mutual_info_score(truth, labels),
                        adjusted_rand_score(truth, labels), seconds))

    started = time.perf_counter()
    ours = AutoKMeans(random_state=0).fit(X)
    record("curate default (k=auto)", ours.labels_, time.perf_counter() - started)
    rule_k = max(2, round((len(X) / 2) ** 0.5))
    started = time.perf_counter()
    record(f"curate k=sqrt(n/2)={rule_k}", AutoKMeans(n_clusters=rule_k, random_state=0).fit(X).labels_,
           time.perf_counter() - started)
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
    return results[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="arena,oasst")
    parser.add_argument("--views", default="request,last_turn,thread")
    parser.add_argument("--umap", action="store_true", help="add UMAP+HDBSCAN (the slow part)")
    args = parser.parse_args()
    from curation.embed import Embedder, get_view

    print(f"load average {os.getloadavg()[0]:.1f} at start")
    embedder = Embedder(backend="torch")
    views = args.views.split(",")
    nmi: dict[str, dict[str, float]] = {view: {} for view in views}
    for name, (convs, truth) in labelled_sets(args.sets.split(",")).items():
        for view in views:
            X = embedder.encode([get_view(view)(m) for m in convs])
            nmi[view][name] = evaluate(f"{name}, view {view}", X, truth, args.umap)
    print("\nNMI of k=auto by view (the default is chosen on the average)")
    for view, by_set in nmi.items():
        cells = "  ".join(f"{name} {value:.3f}" for name, value in by_set.items())
        print(f"{view:<10} {cells}  average {np.mean(list(by_set.values())):.3f}")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
