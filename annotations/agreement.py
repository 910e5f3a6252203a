"""Consensus per record and inter-annotator agreement, the way HelpSteer2 reports it.

- Consensus: the mean of each attribute over a record's submitted responses. With ≥ 3 annotators, a record whose
  spread (max − min) on any attribute exceeds 2 is kept but flagged `disagreement` (HelpSteer2 drops those from
  training; exports skip flagged records).
- Agreement, per attribute and overall, before and after that spread filter:
  quadratic-weighted Cohen's κ averaged over annotator pairs (weighted by the records they share), and
  Krippendorff's α with the ordinal metric over all records (it handles any number of annotators and missing ones).
  "Overall" is the mean over attributes for κ, and α over all (record, attribute) units pooled.
  Both are computed with array operations over the pairs of annotators that share records: one confusion matrix per
  pair from one `bincount`, not one scikit-learn call per pair, so 520 annotators take seconds. When the records'
  annotator pairs exceed `MAX_PAIR_RATINGS`, κ is estimated on the pairs among a seeded random subset of the
  annotators (each pair with every record it shares), and `kappa_sample` (the share of rating pairs used, else 1.0)
  says so. α is always exact.
- Per annotator: responses counted, and the mean offset from the other annotators' mean on the same records
  (leave-one-out, so an annotator does not pull the consensus towards themself). Positive = rates higher.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from annotations.template import ATTRIBUTES

MAX_PAIR_RATINGS = 3_000_000  # (record, annotator pair) ratings per attribute held at once: ~100 MB of arrays
SPREAD = 2  # HelpSteer2: annotations further apart than this on an attribute are not a usable consensus
MIN_ANNOTATORS_FOR_SPREAD = 3
CATEGORIES = 5  # scores 0..4


def consensus(responses: Sequence[Mapping], spread: float = SPREAD) -> dict:
    """Means per attribute (and preference) over one record's submitted responses, plus the disagreement flag."""
    out: dict = {"n_annotators": len(responses), "disagreement": 0}
    for name in (*ATTRIBUTES, "preference"):
        values = [r[name] for r in responses if r.get(name) is not None]
        out[name] = sum(values) / len(values) if values else None
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
    rows = [np.bincount([int(v) for v in values if v is not None], minlength=categories) for values in units]
    return _alpha(np.array(rows, dtype=float).reshape(-1, categories))


def _alpha(counts: np.ndarray) -> float | None:
    """α from a units × categories matrix of how many coders gave each value to each unit."""
    m = counts.sum(1)
    counts = counts[m >= 2]
    share = counts / (m[m >= 2] - 1)[:, None]
    # every ordered pair of values from different coders in a unit, weighted 1/(m-1)
    coincidence = share.T @ counts - np.diag(share.sum(0))
    n_c = coincidence.sum(1)
    n = n_c.sum()
    if n <= 1:
        return None
    categories = len(n_c)
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
    table = _Table(by_record)
    flagged = table.disagreement(spread)
    return {
        "records": len(by_record),
        "responses": len(table.record),
        "multi_annotated": int((np.bincount(table.record, minlength=len(by_record)) >= 2).sum()),
        "disagreement": int(flagged.sum()),
        "before_filter": _statistics(table, np.ones(len(table.record), dtype=bool)),
        "after_filter": _statistics(table, ~flagged[table.record]),
        "annotators": table.annotators(),
    }


class _Table:
    """Responses as arrays, rows in record order: record index, annotator index, each attribute's value as given
    (`raw`, NaN where not rated) and as a score 0–4 (`scores`, −1 where not rated or not a score: κ's confusion
    matrix and α's coincidences leave those out)."""

    def __init__(self, by_record: Mapping[str, list[Mapping]]):
        ids: dict[str, int] = {}
        record, annotator, raw = [], [], []
        for index, rs in enumerate(by_record.values()):
            for r in rs:
                record.append(index)
                annotator.append(ids.setdefault(r["annotator"], len(ids)))
                raw.append([r.get(name) for name in ATTRIBUTES])
        self.names = list(ids)
        self.records = len(by_record)
        self.record = np.array(record, dtype=np.int64)
        self.annotator = np.array(annotator, dtype=np.int64)
        try:  # None becomes NaN
            self.raw = np.array(raw, dtype=float).reshape(-1, len(ATTRIBUTES))
        except (TypeError, ValueError):  # something other than numbers and None: only the numbers count
            self.raw = np.array([[_number(v) for v in values] for values in raw], dtype=float).reshape(-1, len(ATTRIBUTES))
        whole = np.isfinite(self.raw) & (self.raw == np.floor(self.raw)) & (self.raw >= 0) & (self.raw < CATEGORIES)
        self.scores = np.where(whole, np.nan_to_num(self.raw), -1).astype(np.int64)
        self.starts, _ = _groups(self.record)

    def disagreement(self, spread: float) -> np.ndarray:
        """Per record: flagged as `consensus` does (≥ 3 values on an attribute, further apart than `spread`)."""
        if not len(self.record):
            return np.zeros(self.records, dtype=bool)
        rated = np.add.reduceat(np.isfinite(self.raw), self.starts)
        far = np.fmax.reduceat(self.raw, self.starts) - np.fmin.reduceat(self.raw, self.starts) > spread
        flagged = np.zeros(self.records, dtype=bool)
        flagged[self.record[self.starts]] = ((rated >= MIN_ANNOTATORS_FOR_SPREAD) & far).any(1)
        return flagged

    def annotators(self) -> dict:
        """Per annotator: responses, and the mean offset from the others' mean on the same (record, attribute)."""
        counts = np.bincount(self.annotator, minlength=len(self.names))
        rows, columns = np.nonzero(np.isfinite(self.raw))
        unit = self.record[rows] * len(ATTRIBUTES) + columns
        value = self.raw[rows, columns]
        n = np.bincount(unit, minlength=self.records * len(ATTRIBUTES))[unit]
        total = np.bincount(unit, weights=value, minlength=self.records * len(ATTRIBUTES))[unit]
        shared = n >= 2  # leave-one-out: the offset from the other annotators' mean
        offset = value[shared] - (total[shared] - value[shared]) / (n[shared] - 1)
        who = self.annotator[rows][shared]
        sums = np.bincount(who, weights=offset, minlength=len(self.names))
        many = np.bincount(who, minlength=len(self.names))
        return {name: {"count": int(counts[i]), "mean_offset": float(sums[i] / many[i]) if many[i] else None}
                for i, name in sorted(enumerate(self.names), key=lambda item: item[1])}


def _statistics(table: _Table, rows: np.ndarray) -> dict:
    record, annotator = table.record[rows], table.annotator[rows]
    per_attribute, shares = {}, []
    for column, name in enumerate(ATTRIBUTES):
        scores = table.scores[rows, column]
        rated = scores >= 0
        kappa, share = _pairwise_kappa(record[rated], annotator[rated], scores[rated])
        shares.append(share)
        per_attribute[name] = {"kappa": kappa, "alpha": _alpha(_unit_counts(record[rated], scores[rated]))}
    kappas = [v["kappa"] for v in per_attribute.values() if v["kappa"] is not None]
    where, columns = np.nonzero(table.scores[rows] >= 0)  # every (record, attribute) is a unit of its own
    pooled = _unit_counts(record[where] * len(ATTRIBUTES) + columns, table.scores[rows][where, columns])
    return {
        "overall": {"kappa": float(np.mean(kappas)) if kappas else None, "alpha": _alpha(pooled)},
        "attributes": per_attribute,
        "kappa_sample": min(shares, default=1.0),
    }


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _unit_counts(unit: np.ndarray, value: np.ndarray) -> np.ndarray:
    """units × categories: how many coders gave each value to each unit (units numbered 0..)."""
    if not len(unit):
        return np.zeros((0, CATEGORIES))
    _, dense = np.unique(unit, return_inverse=True)
    return np.bincount(dense * CATEGORIES + value, minlength=(dense.max() + 1) * CATEGORIES).reshape(-1, CATEGORIES).astype(float)


def _pairwise_kappa(record: np.ndarray, annotator: np.ndarray, value: np.ndarray) -> tuple[float | None, float]:
    """Quadratic κ of every annotator pair over the records both rated, averaged weighted by those records; and the
    share of pairs used (1.0 unless MAX_PAIR_RATINGS made it sample)."""
    limit = MAX_PAIR_RATINGS
    order = np.argsort(record, kind="stable")
    record, annotator, value = record[order], annotator[order], value[order]
    starts, sizes = _groups(record)
    total = _pair_count(record, np.ones(len(record), dtype=bool))
    share = 1.0
    if total > limit:  # κ on the pairs among a seeded random subset of annotators, each pair with all it shares
        rank = np.random.default_rng(0).permutation(int(annotator.max()) + 1)[annotator]
        lo, hi = 2, int(annotator.max()) + 1
        while lo < hi:  # the most annotators whose pairs stay within the limit
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if _pair_count(record, rank < mid) <= limit else (lo, mid - 1)
        keep = rank < lo
        record, annotator, value = record[keep], annotator[keep], value[keep]
        starts, sizes = _groups(record)
        share = _pair_count(record, np.ones(len(record), dtype=bool)) / total
    left, right = [], []
    for k in np.unique(sizes[sizes >= 2]):
        first = starts[sizes == k]
        i, j = np.triu_indices(int(k), 1)
        left.append((first[:, None] + i).ravel())
        right.append((first[:, None] + j).ravel())
    if not left:
        return None, share
    left, right = np.concatenate(left), np.concatenate(right)
    # each pair (x, y) with x ≤ y, its confusion matrix always x's value by y's
    swap = annotator[left] > annotator[right]
    left, right = np.where(swap, right, left), np.where(swap, left, right)
    n_annotators = int(annotator.max()) + 1
    _, pair = np.unique(annotator[left] * n_annotators + annotator[right], return_inverse=True)
    cells = CATEGORIES * CATEGORIES
    observed = np.bincount(pair * cells + value[left] * CATEGORIES + value[right],
                           minlength=(pair.max() + 1) * cells).reshape(-1, CATEGORIES, CATEGORIES).astype(float)
    n = observed.sum((1, 2))
    weights = (np.arange(CATEGORIES)[:, None] - np.arange(CATEGORIES)[None, :]) ** 2.0
    expected = observed.sum(2)[:, :, None] * observed.sum(1)[:, None, :] / n[:, None, None]
    disagree, chance = (observed * weights).sum((1, 2)), (expected * weights).sum((1, 2))
    defined = (n >= 2) & (chance > 0)  # as quadratic_kappa: undefined without two records or any variance
    if not defined.any():
        return None, share
    kappa = 1 - disagree[defined] / chance[defined]
    return float((kappa * n[defined]).sum() / n[defined].sum()), share


def _groups(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal keys."""
    if not len(sorted_keys):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return starts, np.diff(np.r_[starts, len(sorted_keys)])


def _pair_count(record: np.ndarray, kept: np.ndarray) -> int:
    """How many (record, annotator pair) ratings the `kept` rows make."""
    sizes = np.bincount(record[kept])
    return int((sizes * (sizes - 1) // 2).sum())
