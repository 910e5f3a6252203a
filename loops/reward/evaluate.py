"""`evaluate`: pairwise accuracy of a reward model, overall, per cluster and per source, with Wilson intervals.

Also reports the "longer answer wins" baseline on the same pairs and the correlation of reward with response length,
because a reward model that only learned length would otherwise look good on most human preference sets.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from curation.cluster.rank import wilson
from curation.messages import content_text
from loops.reward.data import load_pairs
from loops.reward.model import RewardModel


def _summary(wins: np.ndarray) -> dict:
    lo, hi = map(float, wilson(float(wins.sum()), len(wins)))
    return {"accuracy": round(float(wins.mean()), 4) if len(wins) else None, "n": int(len(wins)),
            "ci_low": round(lo, 4), "ci_high": round(hi, 4)}


def pair_wins(pairs: list[dict], model: RewardModel, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: 1 if chosen scored above rejected, 0.5 on a tie, else 0; plus all rewards and response lengths."""
    index: dict[bytes, int] = {}
    prompts, responses = [], []
    keys = []
    for p in pairs:
        row = []
        for side in ("chosen", "rejected"):
            key = orjson.dumps([p["prompt"], p[side][0]], option=orjson.OPT_SORT_KEYS)
            if key not in index:  # a response in several pairs is scored once
                index[key] = len(prompts)
                prompts.append(p["prompt"])
                responses.append(p[side][0])
            row.append(index[key])
        keys.append(row)
    rewards, _ = model.score(prompts, responses, progress=progress)
    idx = np.array(keys, dtype=np.int64).reshape(-1, 2)
    diff = rewards[idx[:, 0]] - rewards[idx[:, 1]]
    wins = np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))
    lengths = np.array([len(content_text(r)) for r in responses], dtype=np.float64)
    return wins, rewards, lengths


def evaluate(model: str | Path | RewardModel, pairs: str | Path | list[dict], progress: bool | None = None) -> dict:
    """{"accuracy", "n", "ci_low", "ci_high", "by_cluster", "by_source", "by_length", "length_baseline",
    "length_correlation"}. `by_length` splits the pairs by whether the chosen response is the longer or the shorter
    one: a model that only learned length scores high on the first and low on the second.

    `pairs` is a TRL-format JSONL/Parquet file, an export folder (its test split) or a list of pair dicts.
    """
    if not isinstance(pairs, list):
        path = Path(pairs)
        pairs = load_pairs(path, split="test") if path.is_dir() else load_pairs(path)
    rm = model if isinstance(model, RewardModel) else RewardModel(model)
    if not pairs:
        return {"accuracy": None, "n": 0, "ci_low": 0.0, "ci_high": 1.0, "by_cluster": {}, "by_source": {},
                "by_length": {}, "length_baseline": None, "length_correlation": None}
    wins, rewards, lengths = pair_wins(pairs, rm, progress)
    result = _summary(wins)
    result["by_cluster"] = _grouped(pairs, wins, "cluster_id")
    result["by_source"] = _grouped(pairs, wins, "source")
    longer = length_baseline(pairs)
    result["by_length"] = {name: _summary(wins[longer == value]) for name, value in
                           (("longer_chosen", 1.0), ("shorter_chosen", 0.0)) if (longer == value).any()}
    result["length_baseline"] = round(float(longer.mean()), 4)
    result["length_correlation"] = round(_spearman(rewards, lengths), 4)
    return result


def length_baseline(pairs: list[dict]) -> np.ndarray:
    """The "longer answer wins" heuristic's per-pair wins (ties half)."""
    diff = np.array([len(content_text(p["chosen"][0])) - len(content_text(p["rejected"][0])) for p in pairs])
    return np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))


def _grouped(pairs: list[dict], wins: np.ndarray, key: str) -> dict[str, Any]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        if p.get(key) is not None:
            groups[str(p[key])].append(i)
    return {g: _summary(wins[idx]) for g, idx in sorted(groups.items(), key=lambda kv: -len(kv[1]))}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)
