"""Failure discovery: do the highest failure scores point at bad replies, better than counting thumbs-down?

    python benchmarks/failure_discovery.py [--sets oasst,arena,sample] [--sample-n 3000] [--seeds 0 1 2 3 4] [--quick]

Every ranking is printed beside the naive one in the same run: the count of explicit negative feedback on the rated
reply (thumbs-down + red flags, with their counts), what a team without Curate would sort by. Each set is ingested into
a fresh store and scored with the default detectors and weights, which see messages and feedback only.
- `oasst`: ../shared/data/oasst1-en-validation. Truth = the review labels (kept in metadata["oasst_review"], read here
  to judge, never by a detector): low quality when quality ≤ 0.25 or fails_task ≥ 0.5.
- `sample`: curation.synthetic traffic (seed 0) with planted failure modes; truth = metadata.demo_truth says the rated
  reply failed. The planted feedback is thinner than the failures (55% get a thumbs down), so the rest must find them.
- `arena`: arena-hard-v0.1's 500 prompts with gpt-4-0314's and gpt-3.5-turbo-0125's answers, no feedback and no
  labels: naive ranks every conversation equal, so this shows only what the rest (the reply heuristics) picks out.
Lift@k = the failure share among the top k over the base rate; ties are broken at random in expectation (a tied group
straddling k contributes its average), for both rankings alike, so no ranking gains from the order of ids.

Then the learning curve (benchmarks/failure_learning.py, unless --no-curve): on oasst1 (and on sample traffic with
its generated truth when `sample` is in --sets), 3 rounds of 100 ratings routed by the default mix and by
failure-first only, imported and refitted; per round the scorer's lift@100 among the conversations not yet rated
beside the naive ranking's on the same conversations, and, on a fixed held-out part (30% of the conversations, whole
oasst1 trees, never routed), lift@30 and average precision beside naive's. Mean and median over --seeds.
--quick: seeds 0 1 2 and a 1,000-conversation sample (a few minutes).
"""
from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = SHARED / "oasst1-en-validation" / "oasst1-en-validation.jsonl"
ARENA = SHARED / "arena-hard-v0.1"
KS = (50, 100, 200)


def lift_at(scores: list[float], truth: list[bool], k: int) -> float:
    """Expected failure share of the top k under random tie-breaking, over the base rate."""
    base = sum(truth) / len(truth)
    ranked = sorted(zip(scores, truth), key=lambda t: -t[0])
    hits, taken = 0.0, 0
    for _, group in itertools.groupby(ranked, key=lambda t: t[0]):
        labels = [bad for _, bad in group]
        take = min(len(labels), k - taken)
        hits += take * sum(labels) / len(labels)
        taken += take
        if taken >= k:
            break
    return hits / k / base


def naive_counts(store) -> dict[str, float]:
    """{conversation_id: thumbs-down + flags on the rated reply (the last assistant message), counts included}."""
    with store.connect() as conn:
        msgs = dict(conn.execute(sa.text("SELECT id, messages FROM conversations")).all())
        events = conn.execute(sa.text("SELECT conversation_id, value, turn FROM feedback "
                                      "WHERE type IN ('thumbs_down', 'flag')")).all()
    last = {}
    for cid, messages in msgs.items():
        roles = [m.get("role") for m in orjson.loads(messages)]
        last[cid] = max((i for i, r in enumerate(roles) if r == "assistant"), default=None)
    counts = dict.fromkeys(msgs, 0.0)
    for cid, value, turn in events:
        if turn is None or turn == last[cid]:
            value = orjson.loads(value) if value is not None else None
            counts[cid] += float(value) if isinstance(value, (int, float)) and value > 0 else 1.0
    return counts


def scored(store) -> list[tuple[str, float, dict, list[dict]]]:
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT c.id, f.failure_score, c.metadata, c.messages, f.signals FROM conversations c "
                                    "JOIN failure_scores f ON f.conversation_id = c.id ORDER BY c.id")).all()
    return [(cid, score, orjson.loads(md) if md else {}, orjson.loads(msgs), orjson.loads(sig) if sig else []) for cid, score, md, msgs, sig in rows]


def oasst_truth(metadata: dict, messages: list[dict]) -> bool | None:
    last = len(messages) - 1
    review = next((r for r in metadata["oasst_review"].values() if r["turn"] == last), None)
    labels = (review or {}).get("labels") or {}
    return labels["quality"] <= 0.25 or labels.get("fails_task", 0) >= 0.5 if "quality" in labels else None


def sample_truth(metadata: dict, messages: list[dict]) -> bool:
    return metadata["demo_truth"]["last_answer_failure"] is not None


def write_arena(path: Path) -> Path:
    with open(path, "wb") as out:
        for model in ("gpt-4-0314", "gpt-3.5-turbo-0125"):
            for line in open(ARENA / f"{model}.jsonl", "rb"):
                row = orjson.loads(line)
                messages = [{"role": "user", "content": row["messages"][0]["content"]},
                            {"role": "assistant", "content": row["messages"][1]["content"]["answer"]}]
                out.write(orjson.dumps({"id": f"{row['uid']}:{model}", "messages": messages, "model": model}) + b"\n")
    return path


def report(name: str, store, truth_of, seconds: float) -> None:
    rows = scored(store)
    naive = naive_counts(store)
    judged = [(score, naive[cid], bad) for cid, score, md, msgs, _ in rows if (bad := truth_of(md, msgs)) is not None]
    ours_s, naive_s, truth = map(list, zip(*judged))
    base = sum(truth) / len(truth)
    print(f"\n{name}: {len(rows)} conversations scored in {seconds:.1f}s; {len(judged)} judged; failure base rate "
          f"{base:.1%}; {sum(s > 0 for s in naive_s)} with explicit negative feedback")
    print(f"  {'ranking':<34}" + "".join(f"{f'lift@{k}':>10}" for k in KS))
    for label, scores in (("failure_score (default)", ours_s), ("naive: thumbs-down + flags", naive_s)):
        print(f"  {label:<34}" + "".join(f"{lift_at(scores, truth, k):>10.2f}" for k in KS))
    flagged = [bad for score, _, bad in judged if score >= 0.5]
    if flagged:
        print(f"  failure_score ≥ 0.5: {len(flagged)} conversations, {sum(flagged) / len(flagged):.1%} failures "
              f"(recall {sum(flagged) / sum(truth):.1%})")


def arena_report(store, seconds: float) -> None:
    rows = scored(store)
    naive = naive_counts(store)
    fired = Counter(s["name"] for *_, signals in rows for s in signals)
    nonzero = [r for r in rows if r[1] > 0]
    print(f"\narena: {len(rows)} conversations scored in {seconds:.1f}s; no feedback: naive ranks "
          f"{sum(v == 0 for v in naive.values())} of {len(naive)} equal (lift 1.00 at every k)")
    print(f"  failure_score > 0 for {len(nonzero)} ({len(nonzero) / len(rows):.1%}), from the rest alone: "
          + ", ".join(f"{name} {n}" for name, n in fired.most_common()))
    by_model = Counter(cid.rsplit(":", 1)[1] for cid, *_ in nonzero)
    print(f"  of those, by model: {dict(by_model)}; max score {max((r[1] for r in rows), default=0):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="oasst,arena,sample")
    parser.add_argument("--sample-n", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds of the learning curve")
    parser.add_argument("--quick", action="store_true", help="learning curve over seeds 0 1 2 only")
    parser.add_argument("--no-curve", action="store_true", help="skip the learning curve")
    args = parser.parse_args()
    from curation.ingest import ingest
    from curation.synthetic import write_jsonl
    from curation.signals import score_failures
    from curation.store import Store

    print(f"load average {os.getloadavg()[0]:.1f} at start")
    for name in args.sets.split(","):
        with tempfile.TemporaryDirectory() as home:
            store = Store.open(home)
            if name == "oasst":
                source = DATA
            elif name == "arena":
                source = write_arena(Path(home) / "arena.jsonl")
            else:
                source = write_jsonl(Path(home) / "sample.jsonl", args.sample_n, seed=0)
            ingest(store, [source], progress=False)
            started = time.perf_counter()
            score_failures(store, progress=False)
            seconds = time.perf_counter() - started
            if name == "arena":
                arena_report(store, seconds)
            else:
                report(name, store, oasst_truth if name == "oasst" else sample_truth, seconds)
    if not args.no_curve:
        learning_curves(["oasst", *(["sample"] if "sample" in args.sets.split(",") else [])],
                        [0, 1, 2] if args.quick else args.seeds, 1000 if args.quick else min(args.sample_n, 2000))
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


def learning_curves(datasets: list[str], seeds: list[int], sample_n: int) -> None:
    """The learning curve of the failure model, for the default routing mix and failure-first only, each beside the
    naive ranking on the same conversations (benchmarks/failure_learning.py does the simulation)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from failure_learning import MIX_NAMES, mixes, prepare, print_curve, run_mix

    known = mixes()
    for dataset in datasets:
        with tempfile.TemporaryDirectory() as base:
            low, tree, rates, line = prepare(base, dataset, sample_n)
            print(f"\nlearning curve, {line}; 3 rounds of 100 routed ratings; seeds {' '.join(map(str, seeds))}")
            for name in ("default", "failure-first"):
                print_curve(f"{dataset}, {MIX_NAMES[name]}", run_mix(base, known[name], seeds, 3, 100, 100, low, tree, 0.3, 30, rates),
                            100)


if __name__ == "__main__":
    main()
