"""Learning curve of the failure model: does routing plus ratings beat counting thumbs-down?

    python benchmarks/failure_learning.py [--seeds 0 1 2 3 4] [--mixes default,failure-first,80/20]
                                          [--dataset oasst|sample] [--held-out 0.3] [--verbose]

Ingests ../shared/data/oasst1-en-validation (or curation.synthetic traffic with `--dataset sample`) into a fresh store,
embeds it (the bundled MiniLM, default backend), clusters and scores it. Then, for each routing mix and seed, from a
copy of that store: `rounds` times, route `per-round` conversations (annotations.routing, among those not yet rated),
rate them with the simulated annotator, import them with `import_ratings` (what `curate annotate import` runs),
refit the failure model (`loops.failures.refresh`, what `curate cluster` runs) and rank by the scorer in force.
The oasst1 annotator is the review labels mapped to 0–4 by benchmarks/oasst_ratings.py (helpfulness =
round(4·quality), correctness = round(4·(1 − fails_task)), halves up); the sample's is its generated truth.

Two measurements, each beside the naive ranking (thumbs-down + red-flag count) on the same conversations:
- among the unrated (the issue's): lift@100 among the conversations not yet rated after each round. Routing removes
  what it rated, and failure-first removes the top of both rankings, so late rounds compare rankings on leftovers;
  ratios of small lifts there move a lot.
- held out (no such artifact): a fixed part of the labelled conversations (`--held-out`, whole oasst1 trees, i.e.
  every conversation under one first message, drawn per seed) that routing never picks; after each round the scorer
  in force, the newest fit (in force or not), the prior and naive are measured on it: lift@k (k = 30, lift@100
  scaled to a 30% part) and average precision. Naive and the prior do not change between rounds there, so any gain
  is the ratings'.
Mean and median over seeds are printed per round (`--verbose`: every seed's rounds).

Truth on oasst1 is the issue's "low quality": review quality ≤ 0.25 or fails_task ≥ 0.5 (read here only, never by a
detector). The model is trained on the product's default rule (helpfulness ≤ 1 or correctness ≤ 1) over the ratings.
Ties in a ranking count at their expected value (a random order within the tie) for lift; AP counts a tied group as
one step (scikit-learn).
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


def trees(store) -> dict[str, str]:
    """{conversation_id: its tree (the first message's text; on oasst1, the conversation tree)}: a held-out split by
    tree keeps every reply to the same prompt, and every follow-up in the same thread, on one side."""
    with store.connect() as conn:
        return {cid: orjson.loads(messages)[0].get("content", "") if orjson.loads(messages) else cid
                for cid, messages in conn.execute(sa.text("SELECT id, messages FROM conversations"))}


def held_out_split(low: dict[str, bool], tree: dict[str, str], share: float, seed: int) -> set[str]:
    """About `share` of the labelled conversations, whole trees drawn with `seed`: never routed, never rated."""
    roots = sorted({tree[c] for c in low})
    rng = np.random.default_rng(10_000 + seed)
    chosen = {roots[i] for i in rng.permutation(len(roots))[: int(round(share * len(roots)))]}
    return {c for c in low if tree[c] in chosen}


def average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    """scikit-learn's average precision: a tied group counts as one step (close to, not exactly, its expected value
    under a random order within the tie), the same for every ranking compared."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, scores))


def measure(scores: dict[str, float], ids: list[str], y: np.ndarray, k: int) -> tuple[float, float]:
    s = np.array([float(scores.get(c, 0.0)) for c in ids])
    return lift_at(s, y, k), average_precision(s, y)


def simulate(base_home: str, strategy, rounds: int, per_round: int, k: int, low: dict[str, bool],
             held_out: set[str] = frozenset(), k_held: int = 30, rates: dict[str, dict] | None = None,
             others: dict[str, dict[str, float]] | None = None) -> list[dict]:
    """Route, rate, import and refit `rounds` times; per round the figures among the unrated (the issue's measure)
    and, when `held_out` is given, on those fixed conversations that routing never picks (lift@k_held and AP).
    `rates` ({conversation_id: rating row}) is the simulated annotator; None = the oasst1 labels (oasst_ratings).
    `others` ({name: {conversation_id: score}}): more fixed rankings measured among the unrated, each row[name]."""
    from annotations.rating_import import import_ratings
    from annotations.routing import load_candidates
    from curation.signals import load_scores
    from curation.store import Store
    from curation.store.model_tables import failure_model_scores
    from loops.failures import refresh
    from oasst_ratings import oasst_ratings

    curve = []
    held = sorted(c for c in low if c in held_out)
    y_held = np.array([low[c] for c in held])
    with tempfile.TemporaryDirectory() as home:
        shutil.copytree(base_home, home, dirs_exist_ok=True)
        store = Store.open(home)
        thumbs = {c: float(v) for c, v in naive(store).items()}
        prior = {c: s for c, (s, _) in load_scores(store).items()}
        if rates is None:
            rates = {row["conversation_id"]: row for row in oasst_ratings(store, annotator="simulated-annotator-oasst1")}
        rated: set[str] = set()
        for r in range(1, rounds + 1):
            started = time.perf_counter()
            candidates = load_candidates(store, DATASET).without(rated | set(held_out))
            chosen = strategy.select(candidates, per_round)
            picks = [p.conversation_id for p in chosen]
            path = Path(home) / f"round{r}.jsonl"
            path.write_bytes(b"".join(orjson.dumps(rates[c]) + b"\n" for c in sorted(picks) if c in rates))
            import_ratings(store, path, DATASET)
            rated |= set(picks)
            model = refresh(store)
            name, scores = ranking(store)
            with store.connect() as conn:  # the newest fit's P(failure), in force or not (what it would rank)
                newest = dict(conn.execute(sa.select(failure_model_scores.c.conversation_id,
                                                     failure_model_scores.c.probability)).all())
            ids = sorted(c for c in low if c not in rated and c not in held_out)
            y = np.array([low[c] for c in ids])
            row = {"round": r, "ratings": len(rated), "unrated": len(ids), "scorer": name,
                   "rated_failures": int(sum(low.get(c, False) for c in rated)),
                   "lift": lift_at(np.array([scores.get(c, 0.0) for c in ids]), y, k),
                   "prior": lift_at(np.array([prior.get(c, 0.0) for c in ids]), y, k),
                   "naive": lift_at(np.array([thumbs.get(c, 0.0) for c in ids]), y, k),
                   "cv_ap": (model.get("cv") or {}).get("ap"), "prior_ap": (model.get("cv") or {}).get("prior_ap"),
                   **{name: lift_at(np.array([sc.get(c, 0.0) for c in ids]), y, k) for name, sc in (others or {}).items()},
                   "shares": {s: sum(p.strategy == s for p in chosen)
                              for s in ("failure", "uncertain", "disagree", "novel", "random")},
                   "seconds": round(time.perf_counter() - started, 1)}
            if held:
                row["held"] = {"n": len(held), "k": k_held,
                               **{f"{who}_{m}": v for who, sc in (("scorer", scores), ("prior", prior), ("naive", thumbs),
                                                                  ("fit", newest or prior), *(others or {}).items())
                                  for m, v in zip(("lift", "ap"), measure(sc, held, y_held, k_held))}}
            curve.append(row)
        store.dispose()
    return curve


def mixes() -> dict:
    """The routing mixes compared: name -> (seed -> strategy)."""
    from annotations.routing import FailureFirst

    return {
        "default": lambda s: FailureFirst(random_state=s),
        "failure-first": lambda s: FailureFirst(explore=0, uncertain=0, random_state=s),
        "80/20": lambda s: FailureFirst(uncertain=0, explore=0.2, random_state=s),
        "60/20/20": lambda s: FailureFirst(uncertain=0.2, explore=0.2, random_state=s),
        "random": lambda s: FailureFirst(uncertain=0, explore=1, novel_share=0, random_state=s),
    }


MIX_NAMES = {"default": "default mix: 50% failure, 30% uncertain, 20% explore (novel, else random)",
             "failure-first": "failure-first only: 100% top scores",
             "80/20": "80% failure, 20% explore (the default before the uncertain share)",
             "60/20/20": "60% failure, 20% uncertain, 20% explore",
             "random": "100% uniform random"}


def sample_rates(store) -> tuple[dict[str, bool], dict[str, dict]]:
    """Truth and a simulated annotator for curation.synthetic traffic: a conversation fails when its generator planted a
    failure in the rated (last) reply (metadata.demo_truth); the annotator rates a failure helpfulness 1,
    correctness 1 and any other reply 3 and 3 (generated truth, no people involved)."""
    low, rates = {}, {}
    with store.connect() as conn:
        for cid, metadata in conn.execute(sa.text("SELECT id, metadata FROM conversations")):
            bad = orjson.loads(metadata)["demo_truth"]["last_answer_failure"] is not None
            low[cid] = bad
            rates[cid] = {"conversation_id": cid, "helpfulness": 1 if bad else 3, "correctness": 1 if bad else 3,
                          "annotator": "simulated-annotator-sample"}
    return low, rates


def prepare(base: str, dataset: str = "oasst", sample_n: int = 1000) -> tuple[dict, dict, dict | None, str]:
    """Ingest `dataset` (oasst: ../shared/data/oasst1-en-validation; sample: curation.synthetic traffic, seed 0,
    `sample_n` conversations) into `base`, embed, cluster. Returns (truth, trees, simulated ratings or None for the
    oasst1 labels, a line saying what was done)."""
    from curation.cluster import cluster
    from curation.embed import embed
    from curation.ingest import ingest
    from curation.synthetic import write_jsonl
    from curation.store import Store

    store = Store.open(base)
    source = DATA if dataset == "oasst" else write_jsonl(Path(base) / "sample.jsonl", sample_n, seed=0)
    ingest(store, [source], progress=False)
    started = time.perf_counter()
    embedded = embed(store, progress=False)
    cluster(store, progress=False)
    low, rates = (truth(store), None) if dataset == "oasst" else sample_rates(store)
    tree = trees(store)
    store.dispose()
    return low, tree, rates, (f"{dataset}: {len(low)} labelled conversations, failure base rate "
                              f"{np.mean(list(low.values())):.1%}; embedded ({embedded.get('model')}, "
                              f"{embedded.get('backend', '')}) and clustered in {time.perf_counter() - started:.0f}s")


def run_mix(base: str, make, seeds, rounds: int, per_round: int, k: int, low: dict[str, bool], tree: dict[str, str],
            held_share: float, k_held: int, rates: dict | None = None) -> dict:
    """Both measurements for one mix over `seeds`: {"unrated": curves without a held-out part, "held": curves with}."""
    out = {"unrated": [], "held": []}
    for seed in seeds:
        out["unrated"].append(simulate(base, make(seed), rounds, per_round, k, low, rates=rates))
        if held_share > 0:
            held = held_out_split(low, tree, held_share, seed)
            out["held"].append(simulate(base, make(seed), rounds, per_round, k, low, held, k_held, rates))
    return out


def stats(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.2f} (median {np.median(v):.2f})"


def print_curve(name: str, result: dict, k: int, verbose: bool = False) -> None:
    """Rounds × lift@k among the unrated, beside naive on the same conversations; then the held-out figures."""
    print(f"\n{name}")
    for curves in result["unrated"] if verbose else []:
        for row in curves:
            print(f"    round {row['round']}: lift@{k} {row['lift']:.2f} by {row['scorer']} (prior {row['prior']:.2f}, "
                  f"naive {row['naive']:.2f}); rated failures {row['rated_failures']}; CV AP {row['cv_ap']} vs prior "
                  f"{row['prior_ap']}; shares {row['shares']}")
    by_round = list(zip(*result["unrated"]))
    for rows in by_round:
        ratio = [r["lift"] / r["naive"] if r["naive"] else np.nan for r in rows]
        learned = sum(r["scorer"].startswith("learned") for r in rows)
        print(f"  among unrated, round {rows[0]['round']} ({rows[0]['ratings']} ratings): lift@{k} "
              f"{stats([r['lift'] for r in rows])}, naive {stats([r['naive'] for r in rows])}, prior "
              f"{stats([r['prior'] for r in rows])}; scorer/naive {stats(ratio)}; rated failures "
              f"{stats([r['rated_failures'] for r in rows])}; learned in force {learned}/{len(rows)}")
    for rows in zip(*result["held"]):
        h = [r["held"] for r in rows]
        kh = h[0]["k"]
        print(f"  held out ({h[0]['n']}), round {rows[0]['round']}: lift@{kh} {stats([x['scorer_lift'] for x in h])} vs "
              f"naive {stats([x['naive_lift'] for x in h])} (prior {stats([x['prior_lift'] for x in h])}); AP "
              f"{stats([x['scorer_ap'] for x in h])} vs naive {stats([x['naive_ap'] for x in h])} (prior "
              f"{stats([x['prior_ap'] for x in h])}); scorer/naive lift "
              f"{stats([x['scorer_lift'] / x['naive_lift'] for x in h])}; newest fit (in force or not) lift "
              f"{stats([x['fit_lift'] for x in h])}, AP {stats([x['fit_ap'] for x in h])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--held-out", type=float, default=0.3,
                        help="share of the labelled conversations (whole oasst1 trees) held out; 0 = none")
    parser.add_argument("--k-held", type=int, default=30,
                        help="k of lift@k on the held-out part (30: lift@100 scaled to a 30% part)")
    parser.add_argument("--dataset", choices=("oasst", "sample"), default="oasst",
                        help="oasst1 with its review labels, or curation.synthetic traffic with its planted failures")
    parser.add_argument("--sample-n", type=int, default=1000, help="conversations of sample traffic")
    parser.add_argument("--mixes", default="default,failure-first,80/20", help=f"comma-separated: {', '.join(MIX_NAMES)}")
    parser.add_argument("--verbose", action="store_true", help="print every seed's rounds")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as base:
        low, tree, rates, line = prepare(base, args.dataset, args.sample_n)
        print(line)
        known = mixes()
        for name in args.mixes.split(","):
            result = run_mix(base, known[name], args.seeds, args.rounds, args.per_round, args.k, low, tree,
                             args.held_out, args.k_held, rates)
            print_curve(MIX_NAMES[name], result, args.k, args.verbose)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
