"""Consensus per record and inter-annotator agreement, the way HelpSteer2 reports it.

- Consensus: the mean of each attribute over a record's submitted responses. With ≥ 3 annotators, a record whose
  spread (max − min) on any attribute exceeds 2 is kept but flagged `disagreement` (HelpSteer2 drops those from
  training; exports skip flagged records).
- Agreement, per attribute and overall, before and after that spread filter:
  quadratic-weighted Cohen's κ averaged over annotator pairs (weighted by the records they share), and
  Krippendorff's α with the ordinal metric over all records (it handles any number of annotators and missing ones).
  "Overall" is the mean over attributes for κ, and α over all (record, attribute) units pooled.
- Per annotator: responses counted, and the mean offset from the other annotators' mean on the same records
  (leave-one-out, so an annotator does not pull the consensus towards themself). Positive = rates higher.
"""
from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from annotations.template import ATTRIBUTES

SPREAD = 2  # HelpSteer2: annotations further apart than this on an attribute are not a usable consensus
MIN_ANNOTATORS_FOR_SPREAD = 3
CATEGORIES = 5  # scores 0..4


def consensus(responses: Sequence[Mapping], spread: float = SPREAD) -> dict:
    """Means per attribute (and preference) over one record's submitted responses, plus the disagreement flag."""
    out: dict = {"n_annotators": len(responses), "disagreement": 0}
    for name in (*ATTRIBUTES, "preference"):
        values = [r[name] for r in responses if r.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
        if name != "preference" and len(values) >= MIN_ANNOTATORS_FOR_SPREAD and max(values) - min(values) > spread:
            out["disagreement"] = 1
    return out


def quadratic_kappa(a: Sequence[float], b: Sequence[float], categories: int = CATEGORIES) -> float | None:
    """Cohen's κ with quadratic weights for two raters on the same items; None when undefined (no variance)."""
    if len(a) < 2:
        return None
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # undefined is reported as None
        kappa = cohen_kappa_score(a, b, weights="quadratic", labels=list(range(categories)))
    return None if np.isnan(kappa) else float(kappa)


def krippendorff_alpha_ordinal(units: Iterable[Sequence[float]], categories: int = CATEGORIES) -> float | None:
    """Krippendorff's α, ordinal metric. `units`: the values given to each item (any count; items with < 2 ignored)."""
    coincidence = np.zeros((categories, categories))
    for values in units:
        values = [int(v) for v in values if v is not None]
        m = len(values)
        if m < 2:
            continue
        counts = np.bincount(values, minlength=categories).astype(float)
        # every ordered pair of values from different coders in the unit, weighted 1/(m-1)
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = coincidence.sum(1)
    n = n_c.sum()
    if n <= 1:
        return None
    cumulative = np.concatenate([[0.0], np.cumsum(n_c)])
    idx = np.arange(categories)
    lo, hi = np.minimum.outer(idx, idx), np.maximum.outer(idx, idx)
    # ordinal distance: the number of values between c and k, each end counted half
    delta = (cumulative[hi + 1] - cumulative[lo] - (n_c[lo] + n_c[hi]) / 2) ** 2
    expected = (np.outer(n_c, n_c) * delta).sum()
    if expected == 0:
        return None
    return float(1 - (n - 1) * (coincidence * delta).sum() / expected)


def agreement(responses: Iterable[Mapping], spread: float = SPREAD) -> dict:
    """Agreement statistics over submitted responses (dicts with record_id, annotator and the attributes)."""
    by_record: dict[str, list[Mapping]] = defaultdict(list)
    for r in responses:
        by_record[r["record_id"]].append(r)
    flagged = {rid for rid, rs in by_record.items() if consensus(rs, spread)["disagreement"]}
    kept = {rid: rs for rid, rs in by_record.items() if rid not in flagged}
    return {
        "records": len(by_record),
        "responses": sum(len(rs) for rs in by_record.values()),
        "multi_annotated": sum(len(rs) >= 2 for rs in by_record.values()),
        "disagreement": len(flagged),
        "before_filter": _statistics(by_record),
        "after_filter": _statistics(kept),
        "annotators": _annotators(by_record),
    }


def _statistics(by_record: Mapping[str, list[Mapping]]) -> dict:
    per_attribute = {}
    for name in ATTRIBUTES:
        per_attribute[name] = {
            "kappa": _pairwise_kappa(by_record, name),
            "alpha": krippendorff_alpha_ordinal(
                [r[name] for r in rs if r.get(name) is not None] for rs in by_record.values()
            ),
        }
    kappas = [v["kappa"] for v in per_attribute.values() if v["kappa"] is not None]
    pooled = (
        [r[name] for r in rs if r.get(name) is not None] for rs in by_record.values() for name in ATTRIBUTES
    )
    return {
        "overall": {"kappa": float(np.mean(kappas)) if kappas else None, "alpha": krippendorff_alpha_ordinal(pooled)},
        "attributes": per_attribute,
    }


def _pairwise_kappa(by_record: Mapping[str, list[Mapping]], name: str) -> float | None:
    pairs: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
    for rs in by_record.values():
        rated = sorted((r["annotator"], r[name]) for r in rs if r.get(name) is not None)
        for (ann_a, a), (ann_b, b) in itertools.combinations(rated, 2):
            pairs[(ann_a, ann_b)][0].append(a)
            pairs[(ann_a, ann_b)][1].append(b)
    total = weight = 0.0
    for a, b in pairs.values():
        kappa = quadratic_kappa(a, b)
        if kappa is not None:
            total += kappa * len(a)
            weight += len(a)
    return total / weight if weight else None


def _annotators(by_record: Mapping[str, list[Mapping]]) -> dict:
    counts: dict[str, int] = defaultdict(int)
    offsets: dict[str, list[float]] = defaultdict(list)
    for rs in by_record.values():
        for r in rs:
            counts[r["annotator"]] += 1
        for name in ATTRIBUTES:
            rated = [(r["annotator"], r[name]) for r in rs if r.get(name) is not None]
            if len(rated) < 2:
                continue
            total = sum(v for _, v in rated)
            for annotator, value in rated:
                offsets[annotator].append(value - (total - value) / (len(rated) - 1))
    return {
        name: {"count": counts[name], "mean_offset": float(np.mean(offsets[name])) if offsets[name] else None}
        for name in sorted(counts)
    }
