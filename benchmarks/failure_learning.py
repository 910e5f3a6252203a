"""Learning curve of the failure model on oasst1: does routing plus ratings beat counting thumbs-down?

    python benchmarks/failure_learning.py [--rounds 3] [--per-round 100] [--seeds 0 1 2]

Ingests ../shared/data/oasst1-en-validation into a fresh store, embeds it (the bundled MiniLM, default backend),
clusters and scores it. Then, for each routing mix and seed, from a copy of that store: `rounds` times, route
`per-round` conversations (annotations.routing, among those not yet rated), rate them with the simulated annotator
(the oasst1 review labels mapped to 0–4 by benchmarks/oasst_ratings.py: helpfulness = round(4·quality),
correctness = round(4·(1 − fails_task)), halves up) through `import_ratings` (what `curate annotate import` runs),
refit the failure model (`loops.failures.refresh`, what `curate cluster` runs) and rank the conversations not yet
rated by the scorer in force. Printed per round: lift@100 among the unrated conversations of that ranking, of the
prior (failure_score) and of the naive ranking (thumbs-down + red-flag count) on the same conversations, and the
scorer in force with its cross-validated AP against the prior's.

Truth is the issue's "low quality": review quality ≤ 0.25 or fails_task ≥ 0.5 (read here only, never by a detector).
The model is trained on the product's default rule (helpfulness ≤ 1 or correctness ≤ 1) over the mapped ratings.
Ties in a ranking count at their expected value (a random order within the tie).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oasst1-en-validation" / "oasst1-en-validation.jsonl"
DATASET = "failures"


def truth(store) -> dict[str, bool]:
    """{conversation_id: low quality} for conversations whose last reply has a quality label."""
    out = {}
    with store.connect() as conn:
        for cid, metadata, messages in conn.execute(sa.text("SELECT id, metadata, messages FROM conversations")):
            last = len(orjson.loads(messages)) - 1
            review = next((r for r in orjson.loads(metadata)["oasst_review"].values() if r["turn"] == last), None)
            labels = (review or {}).get("labels") or {}
            if "quality" in labels:
                out[cid] = labels["quality"] <= 0.25 or labels.get("fails_task", 0) >= 0.5
    return out


def naive(store) -> dict[str, float]:
    """Thumbs-down plus red-flag count: the ranking a team without Curate has."""
    with store.connect() as conn:
        return dict(conn.execute(sa.text("SELECT conversation_id, COUNT(*) FROM feedback "
                                         "WHERE type IN ('thumbs_down', 'flag') GROUP BY conversation_id")).all())


def lift_at(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """Lift of the top k with ties at their expected value: the tie that straddles k contributes its mean rate."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order].astype(float)
    cut = s[k - 1]
    above = s > cut
    tied = s == cut
    hits = t[above].sum() + (k - above.sum()) * t[tied].mean()
    return float(hits / k / y.mean())


def ranking(store) -> tuple[str, dict[str, float]]:
    from curation.cluster.scorer import active_scorer
    from curation.signals import load_scores
    from curation.store.model_tables import failure_model_scores

    scorer = active_scorer(store)
    prior = {c: s for c, (s, _) in load_scores(store).items()}
    if scorer["name"] != "learned":
        return "prior", prior
    with store.connect() as conn:
        learned = dict(conn.execute(sa.select(failure_model_scores.c.conversation_id, failure_model_scores.c.probability)).all())
    return f"learned v{scorer['version']}", learned


def simulate(base_home: str, strategy, rounds: int, per_round: int, k: int, low: dict[str, bool]) -> list[dict]:
    from annotations.imports import import_ratings
    from annotations.routing import load_candidates
    from curation.signals import load_scores
    from curation.store import Store
    from loops.failures import refresh
    from oasst_ratings import write_ratings

    curve = []
    with tempfile.TemporaryDirectory() as home:
        shutil.copytree(base_home, home, dirs_exist_ok=True)
        store = Store.open(home)
        thumbs = naive(store)
        prior = {c: s for c, (s, _) in load_scores(store).items()}
        rated: set[str] = set()
        for r in range(1, rounds + 1):
            started = time.perf_counter()
            candidates = load_candidates(store, DATASET).without(rated)
            picks = [p.conversation_id for p in strategy.select(candidates, per_round)]
            path = Path(home) / f"round{r}.jsonl"
            write_ratings(store, path, ids=picks, annotator="simulated-annotator-oasst1")
            import_ratings(store, path, DATASET)
            rated |= set(picks)
            model = refresh(store)
            name, scores = ranking(store)
            ids = sorted(c for c in low if c not in rated)
            y = np.array([low[c] for c in ids])
            row = {"round": r, "ratings": len(rated), "unrated": len(ids), "scorer": name,
                   "lift": lift_at(np.array([scores.get(c, 0.0) for c in ids]), y, k),
                   "prior": lift_at(np.array([prior.get(c, 0.0) for c in ids]), y, k),
                   "naive": lift_at(np.array([float(thumbs.get(c, 0)) for c in ids]), y, k),
                   "cv_ap": (model.get("cv") or {}).get("ap"), "prior_ap": (model.get("cv") or {}).get("prior_ap"),
                   "shares": {s: sum(p.strategy == s for p in strategy.select(candidates, per_round))
                              for s in ("failure", "uncertain", "novel", "random")},
                   "seconds": round(time.perf_counter() - started, 1)}
            curve.append(row)
        store.dispose()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    from annotations.routing import FailureFirst
    from curation.cluster import cluster
    from curation.embed import embed
    from curation.ingest import ingest
    from curation.store import Store

    with tempfile.TemporaryDirectory() as base:
        store = Store.open(base)
        ingest(store, [DATA], progress=False)
        started = time.perf_counter()
        embedded = embed(store, progress=False)
        cluster(store, progress=False)
        low = truth(store)
        store.dispose()
        print(f"oasst1: {len(low)} labelled conversations, low-quality base rate {np.mean(list(low.values())):.1%}; "
              f"embedded ({embedded.get('model')}, {embedded.get('backend', '')}) and clustered in "
              f"{time.perf_counter() - started:.0f}s")
        mixes = {"mix (50% failure, 30% uncertain, 10% novel, 10% random)": lambda s: FailureFirst(random_state=s),
                 "failure-first only (100% top scores)": lambda s: FailureFirst(explore=0, uncertain=0, random_state=s),
                 "old default (80% failure, 20% explore)": lambda s: FailureFirst(uncertain=0, random_state=s)}
        for name, make in mixes.items():
            print(f"\n{name}")
            finals = []
            for seed in args.seeds:
                curve = simulate(base, make(seed), args.rounds, args.per_round, args.k, low)
                for row in curve:
                    print(f"  seed {seed} round {row['round']}: {row['ratings']} ratings, {row['unrated']} unrated; "
                          f"lift@{args.k} {row['lift']:.2f} by {row['scorer']} (prior {row['prior']:.2f}, naive "
                          f"{row['naive']:.2f}, ratio to naive {row['lift'] / row['naive']:.2f}×); CV AP "
                          f"{row['cv_ap']} vs prior {row['prior_ap']}; shares {row['shares']}; {row['seconds']}s")
                finals.append((curve[-1]["lift"], curve[-1]["naive"], curve[-1]["prior"]))
            lift, base_naive, prior = np.mean(finals, axis=0)
            print(f"  after {args.rounds * args.per_round} ratings, mean over seeds: lift@{args.k} {lift:.2f}, prior "
                  f"{prior:.2f}, naive {base_naive:.2f}: {lift / base_naive:.2f}× naive (target ≥ 1.25×)")


if __name__ == "__main__":
    main()
