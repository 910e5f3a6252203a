"""Reward-model figures on the oasst1 dev set (../shared/data): accuracy per loss vs "longer answer wins",
correlation of reward with length, training throughput with peak RSS, and store scoring throughput.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reward_train.py [--losses bt,margin-bt,...] [--epochs 2]
        [--throughput-pairs 5000] [--skip-accuracy] [--skip-scoring]

Pairs are split by conversation tree (80/20, seed 0): no context is on both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OASST = REPO.parent / "shared" / "data" / "oasst1-en-validation" / "oasst1-en-validation.jsonl"

from loops.reward import TrainConfig, evaluate, train  # noqa: E402
from loops.reward.devset import oasst_pairs, oasst_ratings, split_by_tree  # noqa: E402
from loops.reward.evaluate import length_baseline, wilson  # noqa: E402


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--losses", default="bt,bt-no-debias,scaled-bt,margin-bt,regression-then-bt")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--throughput-pairs", type=int, default=0, help="train on this many pairs (cycled) and time it")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-scoring", action="store_true")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="reward-bench-"))
    pairs = oasst_pairs(OASST)
    train_pairs, test_pairs = split_by_tree(pairs)
    write(train_pairs, work / "dev" / "train.jsonl")
    write(test_pairs, work / "dev" / "test.jsonl")
    ratings = [r for r in oasst_ratings(OASST) if r["tree_id"] in {p["tree_id"] for p in train_pairs}]
    write(ratings, work / "ratings" / "train.jsonl")
    base = length_baseline(test_pairs)
    lo, hi = wilson(float(base.sum()), len(base))
    print(f"oasst1 dev: {len(pairs)} pairs, train {len(train_pairs)}, test {len(test_pairs)} (split by tree); "
          f"ratings for regression {len(ratings)}")
    print(f"longer-answer-wins baseline on test: {base.mean():.3f} (95% CI {lo:.3f}-{hi:.3f})", flush=True)

    if args.throughput_pairs:
        n = args.throughput_pairs
        cycled = [train_pairs[i % len(train_pairs)] for i in range(n)]
        write(cycled, work / "tp" / "train.jsonl")
        cfg = TrainConfig(epochs=1.0, max_length=args.max_length)
        cpu = time.process_time()
        result = train(work / "tp", work / "tp-model", config=cfg, progress=False)
        cpu = time.process_time() - cpu
        sec = result["metrics"]["train_seconds"]
        # On a shared machine wall time depends on the neighbours; CPU seconds per pair do not (much), and
        # 2 cores' worth of CPU seconds per wall second is what an idle 2-core machine would give.
        print(f"training throughput: {n} pairs, 1 epoch, max_length {args.max_length}: {sec:.0f} s wall, "
              f"{cpu:.0f} CPU-s ({result['metrics']['pairs_per_second']} pairs/s wall in the Trainer loop; "
              f"{2 * n / cpu:.2f} pairs/s at 2 full cores -> 5,000 pairs in {5000 * cpu / n / 2 / 60:.1f} min); "
              f"peak RSS {peak_rss_mb():.0f} MB", flush=True)

    model_dir = None
    if not args.skip_accuracy:
        for loss in args.losses.split(","):
            debias = not loss.endswith("-no-debias")
            name = loss.removesuffix("-no-debias")
            cfg = TrainConfig(epochs=args.epochs, max_length=args.max_length, length_term=debias,
                              length_penalty=0.1 if debias else 0.0)
            out = work / f"model-{loss}"
            result = train(work / "dev", out, loss=name, config=cfg, progress=False,
                           ratings=work / "ratings" if name == "regression-then-bt" else None)
            ev = result["metrics"]["eval"]
            print(json.dumps({"loss": loss, "accuracy": ev["accuracy"], "ci": [ev["ci_low"], ev["ci_high"]],
                              "n": ev["n"], "length_baseline": ev["length_baseline"],
                              "length_correlation": ev["length_correlation"],
                              "train_seconds": result["metrics"]["train_seconds"],
                              "pairs_per_second": result["metrics"]["pairs_per_second"],
                              "peak_rss_mb": round(peak_rss_mb())}), flush=True)
            model_dir = model_dir or out

    if not args.skip_scoring:
        model_dir = model_dir or (work / "tp-model")
        if not model_dir.exists():
            train(work / "dev", model_dir, config=TrainConfig(max_steps=2, max_length=args.max_length), progress=False)
        from curation.ingest import ingest
        from curation.store import Store
        from curation.store.failure_tables import rewards
        from loops.reward import RewardModel
        from loops.reward.score import score

        store = Store.open(work / "home", url=f"sqlite:///{work / 'home' / 'curate.db'}")
        ingest(store, [str(OASST)])
        for backend in ("torch", "openvino"):
            if backend == "openvino":
                RewardModel(model_dir, backend="openvino")  # the one-off export is not part of scoring throughput
            with store.begin() as conn:
                conn.execute(rewards.delete())
            cpu = time.process_time()
            summary = score(store, model=model_dir, backend=backend, progress=False)
            cpu = time.process_time() - cpu
            print(f"scoring ({backend}): {summary['scored']} conversations in {summary['seconds']} s = "
                  f"{summary['per_second']} conv/s wall, {cpu:.0f} CPU-s ({2 * summary['scored'] / cpu:.0f} conv/s at "
                  f"2 full cores) (skipped {summary['skipped']} without a reply), peak RSS {peak_rss_mb():.0f} MB",
                  flush=True)


if __name__ == "__main__":
    main()
