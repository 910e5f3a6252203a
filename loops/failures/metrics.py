"""Ranking and calibration figures of a failure scorer on rated conversations."""
from __future__ import annotations

import numpy as np


def lift_at(scores: np.ndarray, y: np.ndarray, k: int) -> float | None:
    """The failure rate among the k highest scores over the overall rate (ties broken by position)."""
    if k > len(y) or y.sum() == 0:
        return None
    top = np.argsort(-scores, kind="stable")[:k]
    return round(float(y[top].mean() / y.mean()), 4)


def calibration_bins(p: np.ndarray, y: np.ndarray, bins: int = 5) -> list[dict]:
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    return [{"predicted": round(float(p[which == b].mean()), 4), "observed": round(float(y[which == b].mean()), 4),
             "n": int((which == b).sum())} for b in range(bins) if (which == b).any()]
