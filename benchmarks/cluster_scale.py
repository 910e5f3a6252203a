"""Clustering scale: N generated 384-d conversation vectors clustered, labelled and ranked, with peak RSS.

    python benchmarks/cluster_scale.py --n 10000000 --keep DIR  # the target: ≤ 15 min, peak RSS ≤ 6 GB (~20 GB disk)
    python benchmarks/cluster_scale.py --n 1000000 --today      # and, same run, the in-memory path of before
    python benchmarks/cluster_scale.py --n 50000 --baseline     # and BERTopic-style UMAP(5-d)+HDBSCAN on the same vectors

Setup (not timed) writes N minimal conversations with user ids, generated failure scores and their vectors to a
fresh SQLite store, a chunk at a time (10M vectors are 15 GB: they never sit in memory). Each measured step then
runs in a fresh process, so that its peak RSS is its own:
- ours: `cluster(store)` as `curate cluster` runs it (vectors streamed from the store past the sample size of
  `curation.cluster.stream.sample_size`), then `rank_clusters`;
- today (`--today`): the in-memory path that every n took before: all vectors loaded, then clustered;
- baseline (`--baseline`): UMAP+HDBSCAN on all vectors loaded.
The vectors: 300 topics of Zipf-like sizes, each row a noisy unit vector around its topic centre (cosine ≈ 0.55
to it), so topics overlap as real text embeddings do; 15% of topics fail 4× as often as the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, TOPICS = 384, 300
BLOCK = 100_000
SPACE = "generated|thread|bench"
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec".split()


def topics(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(topic of each row, topic centres, failing topics)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(TOPICS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1 / np.arange(1, TOPICS + 1) ** 0.8
    topic = rng.choice(TOPICS, size=n, p=weights / weights.sum()).astype(np.int32)
    return topic, centres, rng.random(TOPICS) < 0.15


def block(start: int, topic: np.ndarray, centres: np.ndarray, failing: np.ndarray, seed: int = 0):
    """Rows start … start+BLOCK: (unit vectors, failed); seeded per block, so any block is made without the others."""
    rng = np.random.default_rng([seed, start])
    t = topic[start : start + BLOCK]
    X = centres[t] + rng.normal(scale=0.075, size=(len(t), DIM)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, rng.random(len(t)) < np.where(failing[t], 0.4, 0.1)


def conversation_id(i: int) -> str:
    return f"c{i:08d}"


def setup(n: int, folder: Path) -> None:
    """The store through `Store.open` (schema), then rows through sqlite3 with the journal off: setup is not timed,
    and 10M rows through the ORM would take an hour."""
    from curation.embed.vectors import ensure_space
    from curation.store import Store, utcnow

    topic, centres, failing = topics(n)
    np.save(folder / "topic.npy", topic)
    store = Store.open(folder / "home")
    ensure_space(store, SPACE, "generated", "thread", "bench", DIM, "setup")
    store.engine.dispose()
    db = sqlite3.connect(folder / "home" / "curate.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-500000")
    space_id = db.execute("SELECT id FROM embedding_spaces WHERE name = ?", (SPACE,)).fetchone()[0]
    now = utcnow()
    for start in range(0, n, BLOCK):
        X, fails = block(start, topic, centres, failing)
        ids = [conversation_id(i) for i in range(start, start + len(X))]
        texts = [f"{WORDS[t % 17]} {WORDS[(t // 17) % 17]} topic{t} question {start + j}"
                 for j, t in enumerate(topic[start : start + len(X)].tolist())]
        db.execute("BEGIN")
        db.executemany("INSERT INTO conversations (id, messages, user_hash, n_messages, ingested_at) VALUES (?, ?, ?, 2, ?)",
                       ((cid, json.dumps([{"role": "user", "content": text}, {"role": "assistant", "content": "an answer"}]),
                         f"u{(start + j) % 5000}", now) for j, (cid, text) in enumerate(zip(ids, texts))))
        db.executemany("INSERT INTO failure_scores (conversation_id, failure_score, signals, scored_at) VALUES (?, ?, '[]', ?)",
                       ((cid, 0.9 if f else 0.0, now) for cid, f in zip(ids, fails.tolist())))
        db.executemany("INSERT INTO embeddings (space_id, conversation_id, vector, text_hash, run_id, embedded_at) "
                       "VALUES (?, ?, ?, ?, 'setup', ?)",
                       ((space_id, cid, X[j].tobytes(), cid, now) for j, cid in enumerate(ids)))
        db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()


def _clean(store) -> None:
    """A reused folder starts from no clusters."""
    from curation.store.failure_tables import cluster_assignments, cluster_history, clusters

    with store.begin() as conn:
        for table in (cluster_assignments, cluster_history, clusters):
            conn.execute(table.delete())


def ours(folder: Path, sample: int | None = None, again: bool = False) -> dict:
    """`cluster(store)` as the CLI runs it; `sample` (--today) forces the in-memory path of before; `again`
    (--extend) runs on the clusters the last step left, so that it extends them."""
    from curation.cluster import cluster, rank_clusters
    from curation.store import Store

    store = Store.open(folder / "home")
    if not again:
        _clean(store)
    started = time.perf_counter()
    result = cluster(store, score=False, progress=False, sample=sample)
    clustered = time.perf_counter() - started
    rows = rank_clusters(store, top=20)
    total = time.perf_counter() - started
    return {"clusters": result["clusters"], "refit": result["refit"], "assigned": result["assigned"],
            "novel": result["novel"], "streamed": result.get("streamed", False),
            "sample": result.get("sample"), "cluster_seconds": round(clustered, 1), "total_seconds": round(total, 1),
            "top_label": rows[0]["label"], "top_lift": rows[0]["lift"], "nmi_vs_generated_topics": _nmi(store, folder)}


def _nmi(store, folder: Path) -> float:
    """NMI of the stored assignments against the generated topics, read a page at a time (ids are c%08d by row)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    truth = np.load(folder / "topic.npy")
    got = np.full(len(truth), -1, dtype=np.int64)
    with store.engine.connect() as conn:
        result = conn.exec_driver_sql("SELECT conversation_id, cluster_id FROM cluster_assignments")
        while rows := result.fetchmany(200_000):
            got[np.array([int(r[0][1:]) for r in rows])] = [r[1] for r in rows]
    return round(float(nmi(truth, got)), 3)


def baseline(folder: Path) -> dict:
    """BERTopic's defaults: UMAP(n_neighbors=15, n_components=5, min_dist=0, cosine) then HDBSCAN(min_cluster_size=10)."""
    import umap
    from sklearn.cluster import HDBSCAN
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from curation.embed import load_vectors
    from curation.store import Store

    _, X = load_vectors(Store.open(folder / "home"), SPACE)
    started = time.perf_counter()
    Z = umap.UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=0).fit_transform(X)
    labels = HDBSCAN(min_cluster_size=10, copy=True).fit(Z).labels_
    seconds = time.perf_counter() - started
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
    parser.add_argument("--today", action="store_true", help="also run the in-memory path of before (all vectors loaded)")
    parser.add_argument("--baseline", action="store_true", help="also run UMAP(5-d)+HDBSCAN on the same vectors")
    parser.add_argument("--extend", action="store_true", help="then run cluster again on its clusters (an extend)")
    parser.add_argument("--setup-only", action="store_true", help="write the store and stop")
    parser.add_argument("--step", choices=["setup", "ours", "today", "extend", "baseline"])
    parser.add_argument("--folder")
    parser.add_argument("--keep", help="set up in this folder and keep it; a later run with the same --keep reuses it")
    args = parser.parse_args()
    if args.step:
        folder = Path(args.folder)
        if args.step == "setup":
            setup(int(os.environ["BENCH_N"]), folder)
            result = {}
        elif args.step == "baseline":
            result = baseline(folder)
        else:
            result = ours(folder, sample=len(np.load(folder / "topic.npy")) if args.step == "today" else None,
                          again=args.step == "extend")
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_N"] = str(args.n)
        started = time.perf_counter()
        if not (folder / "home" / "curate.db").exists() or len(np.load(folder / "topic.npy")) != args.n:
            shutil.rmtree(folder / "home", ignore_errors=True)
            print(f"disk free before setup: {shutil.disk_usage(folder).free / 1e9:.0f} GB", flush=True)
            measured("setup", folder)
            print(f"setup: {args.n:,} conversations and vectors in {time.perf_counter() - started:.0f}s (not timed below)",
                  flush=True)
        if args.setup_only:
            return
        print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
        mine = measured("ours", folder)
        print(f"curate cluster (k=auto, kmeans) + rank: {json.dumps(mine)}", flush=True)
        if args.extend:
            print(f"the same again, extending its clusters: {json.dumps(measured('extend', folder))}", flush=True)
        for flag, step, title in ((args.today, "today", "in-memory path of before"),
                                  (args.baseline, "baseline", "UMAP(5-d)+HDBSCAN (BERTopic defaults)")):
            if flag:
                other = measured(step, folder)
                print(f"{title}: {json.dumps(other)}", flush=True)
                print(f"  ratio {other['total_seconds'] / mine['total_seconds']:.2f}× the time, "
                      f"peak RSS {mine['peak_rss_mb']} MB vs {other['peak_rss_mb']} MB", flush=True)
        print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}", flush=True)


if __name__ == "__main__":
    main()
