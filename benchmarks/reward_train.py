"""Reward-model figures on the oasst1 dev set (../shared/data): accuracy per loss vs "longer answer wins",
correlation of reward with length, training throughput with peak RSS, and store scoring throughput.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/reward_train.py [--losses bt,margin-bt,...] [--folds 5]
        [--epochs 1] [--throughput-pairs 5000] [--baseline-pairs 64] [--skip-accuracy] [--skip-scoring]

Accuracy is cross-validated over conversation trees: the trees are cut into `--folds` folds, each fold's pairs are
scored by a model trained on the other folds (and, for regression-then-bt, on the oasst review labels of those
other folds' replies only), so every one of the 1,026 pairs is held out once and no context is on both sides.
Throughput pairs are the worst case for the frozen-trunk reuse: the dev pairs are cycled and both responses of
pair i start with "(i) ", so no input is shared between pairs (real exports share many: siblings of one context).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OASST = REPO.parent / "shared" / "data" / "oasst1-en-validation" / "oasst1-en-validation.jsonl"

from curation.cluster.rank import wilson
from loops.reward import RewardModel, TrainConfig, train
from loops.reward.devset import oasst_pairs, oasst_ratings, split_by_tree
from loops.reward.evaluate import _spearman, length_baseline, pair_wins


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(wins: np.ndarray) -> str:
    lo, hi = map(float, wilson(float(wins.sum()), len(wins)))
    return f"{wins.mean():.3f} ({lo:.3f}-{hi:.3f}, n={len(wins)})"


def throughput(work: Path, train_pairs: list[dict], n: int, cfg: TrainConfig, label: str) -> None:
    marked = []
    for i in range(n):
        p = train_pairs[i % len(train_pairs)]
        mark = lambda side: [{"role": "assistant", "content": f"({i}) {side[0]['content']}"}]
        marked.append({**p, "chosen": mark(p["chosen"]), "rejected": mark(p["rejected"])})
    write(marked, work / label / "data" / "train.jsonl")
    cpu = time.process_time()
    result = train(work / label / "data", work / label / "model", config=cfg, progress=False)
    cpu = time.process_time() - cpu
    h = json.loads((work / label / "model" / "curate_reward.json").read_text())["history"]["pairwise"]
    print(f"training [{label}]: {n} pairs ({h.get('distinct_inputs', 2 * n)} distinct inputs), {cfg.epochs:g} epoch(s), "
          f"max_length {cfg.max_length}, frozen layers {cfg.freeze_layers}: {result['metrics']['train_seconds']:.0f} s wall "
          f"(frozen trunk {h.get('trunk_seconds', 0):.0f} s, optimiser steps {h['seconds']:.0f} s), {cpu:.0f} CPU-s = "
          f"{cpu / n * 1000:.0f} CPU-ms/pair -> 5,000 pairs at 2 full cores ~ {5000 * cpu / n / 2 / 60:.1f} min; "
          f"peak RSS {peak_rss_mb():.0f} MB", flush=True)


class HeldOut(RewardModel):
    """The saved checkpoint, scored through the frozen-trunk memo: the same logits as `RewardModel.score` (the tests
    check `TopModel(features) == model(inputs)`) without recomputing the frozen layers of every held-out input."""

    def __init__(self, path: Path, memo: dict):
        super().__init__(path)
        from loops.reward.trunk import FrozenTrunk, TopModel

        n_frozen = self.meta["frozen_layers"]
        self.trunk, self.top = FrozenTrunk(self.model, n_frozen, memo), TopModel(self.model, n_frozen).eval()

    def score(self, prompts: list, responses: list, progress: bool | None = None) -> tuple:
        import torch

        from loops.reward.trunk import pad_states

        states = self.trunk.features([self.renderer.encode(p, r) for p, r in zip(prompts, responses)],
                                     self.tokenizer.pad_token_id)
        out = []
        with torch.inference_mode():
            for start in range(0, len(states), 64):
                hidden, mask = pad_states(states[start : start + 64])
                out.append(self.top(hidden_states=hidden, attention_mask=mask).logits[:, self.head].float().numpy())
        return np.concatenate(out), None


def cross_validate(work: Path, pairs: list[dict], ratings: list[dict], loss: str, folds: int, cfg: TrainConfig,
                   memo: dict) -> dict:
    """Pooled held-out wins over tree folds, plus per-fold corr(reward, length)."""
    wins = np.zeros(len(pairs))
    corrs = []
    started = time.perf_counter()
    trees = sorted({p["tree_id"] for p in pairs}, key=lambda t: hashlib.sha256(f"folds:{t}".encode()).hexdigest())
    rank = {t: i for i, t in enumerate(trees)}  # trees dealt round-robin in a seeded order
    fold_of = [rank[p["tree_id"]] % folds for p in pairs]
    loss, _, lr = loss.partition(":")  # "bt:1e-3": the loss at that learning rate
    name = loss.removesuffix("-no-debias")
    debias = not loss.endswith("-no-debias")
    for k in range(folds):
        test_idx = [i for i, f in enumerate(fold_of) if f == k]
        train_rows = [p for p, f in zip(pairs, fold_of) if f != k]
        held_trees = {pairs[i]["tree_id"] for i in test_idx}
        folder = work / "cv" / f"{loss}{lr}" / str(k)
        write(train_rows, folder / "data" / "train.jsonl")
        write([r for r in ratings if r["tree_id"] not in held_trees], folder / "ratings" / "train.jsonl")
        fold_cfg = dataclasses.replace(cfg, length_term=debias, length_penalty=cfg.length_penalty if debias else 0.0,
                                       learning_rate=float(lr) if lr else cfg.learning_rate)
        train(folder / "data", folder / "model", loss=name, config=fold_cfg, progress=False, trunk_memo=memo,
              ratings=folder / "ratings" if name == "regression-then-bt" else None)
        w, rewards, lengths = pair_wins([pairs[i] for i in test_idx], HeldOut(folder / "model", memo))
        wins[test_idx] = w
        corrs.append(_spearman(rewards, lengths))
    longer = length_baseline(pairs)
    return {"loss": loss + (f" (lr {lr})" if lr else ""), "accuracy": summary(wins), "longer_chosen": summary(wins[longer == 1]),
            "shorter_chosen": summary(wins[longer == 0]), "corr_reward_length": round(float(np.mean(corrs)), 3),
            "corr_per_fold": [round(c, 3) for c in corrs], "seconds": round(time.perf_counter() - started)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--losses", default="bt,bt-no-debias,margin-bt,scaled-bt,regression-then-bt")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=float, default=TrainConfig.epochs)
    ap.add_argument("--max-length", type=int, default=TrainConfig.max_length)
    ap.add_argument("--throughput-pairs", type=int, default=0, help="train on this many distinct pairs and time it")
    ap.add_argument("--baseline-pairs", type=int, default=0,
                    help="time the previous default (256 tokens, 3 frozen layers run every step) on this many pairs")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-scoring", action="store_true")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="reward-bench-"))
    pairs = oasst_pairs(OASST)
    train_pairs, _ = split_by_tree(pairs)
    base = length_baseline(pairs)
    print(f"oasst1 dev: {len(pairs)} pairs in {len({p['tree_id'] for p in pairs})} trees; "
          f"longer-answer-wins baseline on all pairs: {summary(base)}; load {os.getloadavg()[0]:.1f}", flush=True)
    cfg = TrainConfig(epochs=args.epochs, max_length=args.max_length)

    if args.baseline_pairs:
        throughput(work, train_pairs, args.baseline_pairs,
                   TrainConfig(epochs=1.0, max_length=256, freeze_layers=3, reuse_frozen=False), "previous-default")
    if args.throughput_pairs:
        throughput(work, train_pairs, args.throughput_pairs, cfg, "default")

    model_dir = None
    if not args.skip_accuracy:
        ratings = oasst_ratings(OASST)
        memo: dict = {}
        for loss in args.losses.split(","):
            result = cross_validate(work, pairs, ratings, loss, args.folds, cfg, memo)
            print(json.dumps({**result, "load": round(os.getloadavg()[0], 1), "peak_rss_mb": round(peak_rss_mb())}),
                  flush=True)
            model_dir = model_dir or (work / "cv" / loss / "0" / "model")

    if not args.skip_scoring:
        model_dir = model_dir or (work / "default" / "model")
        if not model_dir.exists():
            write(train_pairs, work / "dev" / "train.jsonl")
            train(work / "dev", model_dir, config=TrainConfig(max_steps=20, max_length=args.max_length), progress=False)
        from curation.ingest import ingest
        from curation.store import Store
        from curation.store.failure_tables import rewards
        from loops.reward.score import score

        store = Store.open(work / "home", url=f"sqlite:///{work / 'home' / 'curate.db'}")
        ingest(store, [str(OASST)])
        scored = {}
        for backend in ("torch", "onnx"):
            RewardModel(model_dir, backend=backend)  # a one-off export is not part of scoring throughput
            with store.begin() as conn:
                conn.execute(rewards.delete())
            cpu = time.process_time()
            s = score(store, model=model_dir, backend=backend, progress=False)
            cpu = time.process_time() - cpu
            with store.connect() as conn:
                scored[backend] = dict(conn.execute(rewards.select().with_only_columns(
                    rewards.c.conversation_id, rewards.c.reward)).all())
            print(f"scoring ({backend}): {s['scored']} conversations in {s['seconds']} s = {s['per_second']} conv/s wall, "
                  f"{cpu:.1f} CPU-s = {cpu / s['scored'] * 1000:.1f} CPU-ms/conv ({2 * s['scored'] / cpu:.0f} conv/s at "
                  f"2 full cores), load {os.getloadavg()[0]:.1f}, peak RSS {peak_rss_mb():.0f} MB", flush=True)
        ids = sorted(scored["torch"])
        a, b = np.array([scored["torch"][i] for i in ids]), np.array([scored["onnx"][i] for i in ids])
        print(f"onnx int8 vs torch rewards: Pearson {np.corrcoef(a, b)[0, 1]:.4f}, Spearman {_spearman(a, b):.4f}",
              flush=True)


if __name__ == "__main__":
    main()
