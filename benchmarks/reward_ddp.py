"""DDP on CPUs: the same 5,000 pairs trained by 1 process and by N processes (gloo), same base, seed and epochs.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reward_ddp.py [--pairs 5000] [--epochs 1] [--processes 2] [--many-first]

Run it under `flock` with the other timed benchmarks, so that timed runs never overlap.

Pairs: real oasst1 pairs from ../shared/data, built as benchmarks/reward_train.py builds its throughput pairs: the
dev set's training trees (tree split) are cycled and both replies of pair i start with "(i) ", so every pair is
distinct (no input repeats). Evaluation: the held-out trees' pairs, the same for both runs.
Base: the bundled MiniLM with the CPU defaults: the embeddings and 5 of 6 layers frozen and run once per distinct input
(under DDP each rank runs 1/N of the inputs and the ranks exchange their states), top layer and head trained.
`--batch-size` (16) is the pairs per optimiser step in both runs: N processes take 16/N each, so both runs make the
same number of steps on the same pairs, and differ only in how the length-grouped batches are cut and summed.

Prints per run: wall seconds (frozen trunk, optimiser steps), held-out accuracy with its Wilson interval and
/proc/loadavg before and after; then the accuracy difference (target |diff| <= 0.02) and the wall-time ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_train import OASST, write  # the training benchmark's data file and writer (it also sets the offline env)

from curation.cluster.rank import wilson
from loops.reward import TrainConfig, train
from loops.reward.devset import oasst_pairs, split_by_tree


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def marked_pairs(train_pairs: list[dict], n: int) -> list[dict]:
    out = []
    for i in range(n):
        p = train_pairs[i % len(train_pairs)]
        mark = lambda side: [{"role": "assistant", "content": f"({i}) {side[0]['content']}"}]
        out.append({**p, "chosen": mark(p["chosen"]), "rejected": mark(p["rejected"])})
    return out


def run(data: Path, out: Path, cfg: TrainConfig) -> dict:
    before = loadavg()
    started = time.perf_counter()
    result = train(data, out, config=cfg, progress=False)
    wall = time.perf_counter() - started
    meta = json.loads((out / "curate_reward.json").read_text())
    h, ev = meta["history"]["pairwise"], result["metrics"]["eval"]
    lo, hi = wilson(ev["accuracy"] * ev["n"], ev["n"])
    figures = {"processes": cfg.num_processes, "wall_s": round(wall, 1), "train_s": result["metrics"]["train_seconds"],
               "trunk_s": h.get("trunk_seconds"), "steps_s": h["seconds"], "steps": h["steps"],
               "accuracy": ev["accuracy"], "ci": [round(float(lo), 3), round(float(hi), 3)], "n_eval": ev["n"],
               "length_baseline": ev["length_baseline"], "loadavg_before": before, "loadavg_after": loadavg()}
    print(json.dumps(figures), flush=True)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--many-first", action="store_true",
                    help="run the N-process training first (the load of a shared machine drifts: run both orders)")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="reward-ddp-"))
    train_pairs, test_pairs = split_by_tree(oasst_pairs(OASST))
    write(marked_pairs(train_pairs, args.pairs), work / "data" / "train.jsonl")
    write(test_pairs, work / "data" / "test.jsonl")
    print(f"{args.pairs} training pairs (cycled from {len(train_pairs)} oasst1 pairs), {len(test_pairs)} held-out pairs; "
          f"MiniLM, {args.epochs:g} epoch(s), batch {args.batch_size}, seed {args.seed}; {os.cpu_count()} CPUs",
          flush=True)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    runs = [(work / "p1", cfg), (work / f"p{args.processes}", TrainConfig(**{**vars(cfg), "num_processes": args.processes}))]
    one, many = [run(work / "data", out, c) for out, c in (runs[::-1] if args.many_first else runs)][::-1 if args.many_first else 1]
    diff = many["accuracy"] - one["accuracy"]
    print(f"held-out accuracy: 1 process {one['accuracy']:.4f}, {args.processes} processes {many['accuracy']:.4f}, "
          f"difference {diff:+.4f} ({'within' if abs(diff) <= 0.02 else 'OUTSIDE'} ±0.02); wall time "
          f"{one['wall_s']:.0f} s vs {many['wall_s']:.0f} s: ratio ({args.processes} processes / 1) "
          f"{many['wall_s'] / one['wall_s']:.2f}", flush=True)


if __name__ == "__main__":
    main()
