"""Clustering scale: N generated 384-d conversation vectors clustered, labelled and ranked, with peak RSS.

    python benchmarks/cluster_scale.py --n 1000000            # the target: ≤ 5 min, peak RSS ≤ 4 GB
    python benchmarks/cluster_scale.py --n 50000 --baseline   # and BERTopic-style UMAP(5-d)+HDBSCAN on the same vectors

Setup (not timed) writes N minimal conversations with user ids and generated failure scores to a fresh SQLite store
and saves the vectors; each measured step then runs in a fresh process so that its peak RSS is its own.
The vectors: 300 topics of Zipf-like sizes, each row a noisy unit vector around its topic centre (cosine ≈ 0.55
to it), so topics overlap as real text embeddings do; 15% of topics fail 4× as often as the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, TOPICS = 384, 300
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec".split()


def generate(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1 / np.arange(1, TOPICS + 1) ** 0.8
    topic = rng.choice(TOPICS, size=n, p=weights / weights.sum()).astype(np.int32)
    X = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: the float64 noise of 1M rows alone would be 3 GB
        t = topic[start : start + 100_000]
        block = centres[t] + rng.normal(scale=0.075, size=(len(t), DIM)).astype(np.float32)
        X[start : start + 100_000] = block / np.linalg.norm(block, axis=1, keepdims=True)
    failing_topic = rng.random(TOPICS) < 0.15
    fails = rng.random(n) < np.where(failing_topic[topic], 0.4, 0.1)
    return X, topic, fails


def setup(n: int, folder: Path) -> None:
    from curation.store import Store, utcnow
    from curation.store.failure_tables import failure_scores
    from curation.store.tables import conversations

    X, topic, fails = generate(n)
    np.save(folder / "X.npy", X)
    np.save(folder / "topic.npy", topic)
    store = Store.open(folder / "home")
    now = utcnow()
    for start in range(0, n, 50_000):
        rows, scores = [], []
        for i in range(start, min(n, start + 50_000)):
            t = int(topic[i])
            text = f"{WORDS[t % 17]} {WORDS[(t // 17) % 17]} topic{t} question {i}"
            rows.append({"id": f"c{i:07d}", "messages": json.dumps([{"role": "user", "content": text},
                                                                   {"role": "assistant", "content": "an answer"}]),
                         "user_hash": f"u{i % 5000}", "n_messages": 2, "ingested_at": now})
            scores.append({"conversation_id": f"c{i:07d}", "failure_score": 0.9 if fails[i] else 0.0,
                           "signals": "[]", "scored_at": now})
        with store.begin() as conn:
            conn.execute(conversations.insert(), rows)
            conn.execute(failure_scores.insert(), scores)


def ours(folder: Path) -> dict:
    from curation.cluster import cluster, rank_clusters
    from curation.store import Store
    from curation.store.failure_tables import cluster_assignments, cluster_history, clusters

    X = np.load(folder / "X.npy")
    ids = [f"c{i:07d}" for i in range(len(X))]
    store = Store.open(folder / "home")
    with store.begin() as conn:  # a reused folder starts from no clusters
        for table in (cluster_assignments, cluster_history, clusters):
            conn.execute(table.delete())
    started = time.perf_counter()
    result = cluster(store, vectors=(ids, X), score=False, progress=False)
    clustered = time.perf_counter() - started
    rows = rank_clusters(store, top=20)
    total = time.perf_counter() - started
    from sklearn.metrics import normalized_mutual_info_score as nmi

    with store.connect() as conn:
        got = dict(conn.execute(__import__("sqlalchemy").text("SELECT conversation_id, cluster_id FROM cluster_assignments")).all())
    truth = np.load(folder / "topic.npy")
    score = nmi(truth, [got[i] for i in ids])
    return {"clusters": result["clusters"], "cluster_seconds": round(clustered, 1), "total_seconds": round(total, 1),
            "top_label": rows[0]["label"], "top_lift": rows[0]["lift"], "nmi_vs_generated_topics": round(score, 3)}


def baseline(folder: Path) -> dict:
    """BERTopic's defaults: UMAP(n_neighbors=15, n_components=5, min_dist=0, cosine) then HDBSCAN(min_cluster_size=10)."""
    import umap
    from sklearn.cluster import HDBSCAN

    X = np.load(folder / "X.npy")
    started = time.perf_counter()
    Z = umap.UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=0).fit_transform(X)
    labels = HDBSCAN(min_cluster_size=10, copy=True).fit(Z).labels_
    seconds = time.perf_counter() - started
    from sklearn.metrics import normalized_mutual_info_score as nmi

    return {"clusters": int(labels.max() + 1), "noise": float((labels < 0).mean()), "total_seconds": round(seconds, 1),
            "nmi_vs_generated_topics": round(nmi(np.load(folder / "topic.npy"), labels), 3)}


def measured(step: str, folder: Path) -> dict:
    """Run one step in a fresh process; its peak RSS (ru_maxrss of that child) is reported with its result."""
    out = subprocess.run([sys.executable, __file__, "--step", step, "--folder", str(folder)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--baseline", action="store_true", help="also run UMAP(5-d)+HDBSCAN on the same vectors")
    parser.add_argument("--step", choices=["setup", "ours", "baseline"])
    parser.add_argument("--folder")
    parser.add_argument("--keep", help="set up in this folder and keep it; a later run with the same --keep reuses it")
    args = parser.parse_args()
    if args.step:
        folder = Path(args.folder)
        if args.step == "setup":
            setup(int(os.environ["BENCH_N"]), folder)
            result = {}
        else:
            result = ours(folder) if args.step == "ours" else baseline(folder)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_N"] = str(args.n)
        started = time.perf_counter()
        if not (folder / "X.npy").exists() or len(np.load(folder / "topic.npy")) != args.n:
            measured("setup", folder)
            print(f"setup: {args.n:,} conversations and vectors in {time.perf_counter() - started:.0f}s (not timed below)")
        mine = measured("ours", folder)
        print(f"curate cluster (k=auto, kmeans) + rank: {json.dumps(mine)}")
        if args.baseline:
            base = measured("baseline", folder)
            print(f"UMAP(5-d)+HDBSCAN (BERTopic defaults): {json.dumps(base)}")
            print(f"speed-up {base['total_seconds'] / mine['total_seconds']:.1f}×, "
                  f"peak RSS {mine['peak_rss_mb']} MB vs {base['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
