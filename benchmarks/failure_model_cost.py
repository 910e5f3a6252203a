"""Cost of the failure model: refit on R ratings and score N conversations, with peak RSS.

    python benchmarks/failure_model_cost.py --n 1000000 --ratings 10000   # the target: ≤ 2 min, ≤ 2 GB on 2 cores

Setup (not timed) writes N minimal conversations to a fresh SQLite store with what the model reads: failure scores
with a few signals, thumbs-down/flag feedback on some, a 384-d embedding each (generated vectors around 300 topics,
as in benchmarks/cluster_scale.py), their topic as the cluster assignment, and R single-response ratings whose
failure depends on the topic and the signals. The measured step, `loops.failures.refresh` (what `curate cluster`
runs after new ratings: load ratings, build features, 5-fold grouped CV, gate, fit, record, score all N conversations
into failure_model_scores), runs in a fresh process so that its peak RSS is its own. The trivial baseline in the same
run: sorting the N conversations by their stored failure_score (what ranks without the model).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
SPACE = "generated|last_turn|none"


def setup(n: int, n_ratings: int, home: Path) -> None:
    from cluster_scale import BLOCK, block, topics

    from annotations.tables import ratings
    from curation.store import Store, dumps, utcnow
    from curation.store.embedding_tables import embedding_spaces, embeddings
    from curation.store.failure_tables import cluster_assignments, failure_scores
    from curation.store.tables import conversations, feedback

    topic, centres, failing = topics(n)  # cluster_scale's generated topics, made block by block
    X, fails = np.empty((n, centres.shape[1]), dtype=np.float32), np.empty(n, dtype=bool)
    for start in range(0, n, BLOCK):
        X[start : start + BLOCK], fails[start : start + BLOCK] = block(start, topic, centres, failing)
    rng = np.random.default_rng(1)
    store = Store.open(home)
    now = utcnow()
    with store.begin() as conn:
        conn.execute(embedding_spaces.insert(), [{"id": 1, "name": SPACE, "model": "generated", "view": "last_turn",
                                                  "backend": "none", "dim": X.shape[1], "created_at": now,
                                                  "updated_at": now}])
    rated = set(rng.choice(n, size=n_ratings, replace=False).tolist())
    for start in range(0, n, 50_000):
        conv, score, emb, assign, fb, rate = [], [], [], [], [], []
        for i in range(start, min(n, start + 50_000)):
            cid = f"c{i:07d}"
            thumbs = bool(rng.random() < (0.3 if fails[i] else 0.05))
            signals = [{"name": "thumbs_down", "value": 1.0, "weight": 0.9, "why": "thumbs down"}] if thumbs else []
            if rng.random() < 0.1:
                signals.append({"name": "apology", "value": 0.5, "weight": 0.3, "why": "apologises"})
            conv.append({"id": cid, "messages": json.dumps([{"role": "user", "content": f"topic {topic[i]} q{i}"},
                                                            {"role": "assistant", "content": "an answer"}]),
                         "n_messages": 2, "ingested_at": now})
            score.append({"conversation_id": cid, "failure_score": 0.9 if thumbs else 0.1 * len(signals),
                          "signals": dumps(signals), "scored_at": now})
            emb.append({"space_id": 1, "conversation_id": cid, "vector": X[i].astype("<f4").tobytes(),
                        "text_hash": f"{i:032x}", "embedded_at": now})
            assign.append({"conversation_id": cid, "cluster_id": int(topic[i]), "similarity": 0.5, "novel": 0})
            if thumbs:
                fb.append({"id": f"f{i}", "conversation_id": cid, "type": "thumbs_down", "turn": 1, "at": now})
            if i in rated:
                bad = bool(fails[i])
                rate.append({"record_id": f"r-{cid}", "dataset": "bench", "conversation_id": cid, "n_annotators": 1,
                             "helpfulness": 1.0 if bad else 3.0, "correctness": 1.0 if bad else 4.0, "disagreement": 0,
                             "annotators": '["bench"]', "updated_at": now})
        with store.begin() as conn:
            for table, rows in ((conversations, conv), (failure_scores, score), (embeddings, emb),
                                (cluster_assignments, assign), (feedback, fb), (ratings, rate)):
                if rows:
                    conn.execute(table.insert(), rows)
    store.dispose()


def measure(home: Path) -> dict:
    from curation.store import Store
    from loops.failures import refresh

    store = Store.open(home)
    started = time.perf_counter()
    result = refresh(store)
    seconds = time.perf_counter() - started
    import sqlalchemy as sa

    with store.connect() as conn:
        t0 = time.perf_counter()
        conn.execute(sa.text("SELECT conversation_id FROM failure_scores ORDER BY failure_score DESC LIMIT 100")).all()
        baseline = time.perf_counter() - t0
    return {"seconds": round(seconds, 1), "scored": result["scored"], "version": result["version"],
            "promoted": result["promoted"], "ap": result["cv"]["ap"], "prior_ap": result["cv"]["prior_ap"],
            "baseline_rank_seconds": round(baseline, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--ratings", type=int, default=10_000)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--setup", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    if args.setup:
        setup(args.n, args.ratings, Path(args.setup))
        return
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        started = time.perf_counter()
        # setup in a process of its own too: Linux carries a parent's peak RSS into a forked child's ru_maxrss, so
        # a measuring child forked from a parent that held the generated vectors (1.5 GB) would report them as its own
        subprocess.run([sys.executable, __file__, "--setup", str(home), "--n", str(args.n), "--ratings",
                        str(args.ratings)], check=True, capture_output=True)
        print(f"setup: {args.n:,} conversations, {args.ratings:,} ratings in {time.perf_counter() - started:.0f}s "
              f"(not timed); {os.cpu_count()} CPUs")
        out = subprocess.run([sys.executable, __file__, "--measure", str(home)], check=True, capture_output=True,
                             text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"refit on {args.ratings:,} ratings + score {r['scored']:,} conversations: {r['seconds']}s, peak RSS "
              f"{r['peak_rss_mib']:,} MiB (target ≤ 120 s, ≤ 2,048 MiB); fit v{r['version']} CV AP {r['ap']} vs "
              f"prior {r['prior_ap']}, promoted {r['promoted']}; baseline (top 100 by stored failure_score): "
              f"{r['baseline_rank_seconds']}s")


if __name__ == "__main__":
    main()
