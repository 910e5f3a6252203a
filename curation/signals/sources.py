"""How far to trust each source of failure evidence, learned without labels from how the sources agree.

The fixed weights of the noisy-OR (`curation.signals.score`) cannot know how good a judge is: a very good judge is
diluted by feedback and the reply checks, a bad one is trusted as much as a user's 1–5 rating. Once the store holds
judgements, the prior therefore weighs three sources by their estimated reliability:

- `judge`: the LLM judge's verdict (missing where the judge never read the conversation);
- `feedback`: what users did (curation.signals.feedback's detectors);
- `checks`: the reply checks and every other detector (curation.signals.response's, custom ones).

Each source's reading of a conversation is one category. Feedback and checks: the bin of the source's own noisy-OR
(same weights as the prior) among `none`, b1 (0, .25), b2 [.25, .5), b3 [.5, .75), b4 [.75, 1], or `success` when
only success evidence (a thumbs up) fired. The judge: its lower of helpfulness and correctness, 4 → `none`, 3 → b1,
2 → b2, 1 → b3, 0 → b4. Under the assumption that the
three sources err independently given whether the reply failed, the joint counts of their categories over the
traffic identify each source's P(category | failure) and P(category | not) and the failure rate (Dawid & Skene 1979;
with three conditionally independent sources the model is identified up to the labels' swap, Kruskal 1977). They
are estimated by EM on the table of category triples, a few hundred cells whatever the traffic's size, starting from
the fixed-weight prior's scores (which also names which class is "failure"), with one pseudo-conversation per category.

The prior is then the posterior: logit P(failure) = logit(rate) + Σ over the sources read of
log P(category | failure) / P(category | not), with `TIE_BREAK` × the fixed-weight score ordering conversations
within one triple (a judge's higher attribute, a second thumbs down). A judge that agrees with the users and the
checks gets a large log-likelihood ratio; a noisy one gets little. Nothing is fitted to labels, nothing to a dataset:
the only constants are the bins, the pseudo-count and the tie-break. Deterministic: EM from a fixed start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SOURCES = ("judge", "feedback", "checks")
CATEGORIES = ("success", "none", "b1", "b2", "b3", "b4")  # b1–b4: the noisy-OR's bins (0,.25) [.25,.5) [.5,.75) ≥.75
EDGES = (0.25, 0.5, 0.75)
MISSING = "-"
PSEUDO = 1.0  # pseudo-conversations per category, split between the classes by the failure rate: never impossible,
# and a category never seen is neutral (log-likelihood ratio 0)
TIE_BREAK = 0.05  # × the fixed-weight score, in log-odds: orders within a triple, never across two clear ones
MIN_JUDGED = 50  # fewer judged conversations: the judge's reliability is not estimated, the fixed weights score
MAX_ITER, TOL = 1000, 1e-9


def source_of(name: str, feedback_names: frozenset[str]) -> str:
    return "judge" if name == "judge" else "feedback" if name in feedback_names else "checks"


def category(rows: list[dict]) -> str:
    """One source's category from its fired signals ({"value", "weight"} each, as `failure_scores` stores them)."""
    fail, kept = 1.0, False
    for s in rows:
        if s["weight"] >= 0:
            fail *= 1.0 - min(1.0, s["weight"] * s["value"])
        elif s["value"] > 0:
            kept = True
    fail = 1.0 - fail
    if fail <= 0:
        return "success" if kept else "none"
    return f"b{1 + sum(fail >= e for e in EDGES)}"


def judge_category(verdict: dict | None) -> str:
    """The judge's category from its verdict: the lower of helpfulness and correctness; `MISSING` when unread."""
    read = [verdict[a] for a in ("helpfulness", "correctness") if verdict.get(a) is not None] if verdict else []
    if not read:
        return MISSING
    return "none" if min(read) >= 4 else f"b{4 - max(0, int(min(read)))}"


def cell_of(signals: list[dict], verdict: dict | None, feedback_names: frozenset[str]) -> str:
    """"judge|feedback|checks" categories of one conversation from its fired signals and the judge's verdict."""
    by: dict[str, list[dict]] = {s: [] for s in SOURCES}
    for s in signals:
        by[source_of(s["name"], feedback_names)].append(s)
    return "|".join([judge_category(verdict), category(by["feedback"]), category(by["checks"])])


@dataclass
class SourceModel:
    """The fitted two-class model: `rate_` = P(failure); `llr_[source][category]` = log P(c | failure) / P(c | not);
    `p_fail_` / `p_ok_`: each source's category distributions; `n_` conversations, `iterations_` of EM."""

    rate_: float
    llr_: dict[str, dict[str, float]]
    p_fail_: dict[str, dict[str, float]] = field(default_factory=dict)
    p_ok_: dict[str, dict[str, float]] = field(default_factory=dict)
    n_: int = 0
    iterations_: int = 0

    def log_odds(self, cell: str) -> float:
        z = math.log(self.rate_ / (1.0 - self.rate_))
        for source, cat in zip(SOURCES, cell.split("|")):
            if cat != MISSING:
                z += self.llr_[source][cat]
        return z

    def score(self, cell: str, fixed: float) -> float:
        """The posterior P(failure) of a conversation in `cell`, ordered within the cell by its fixed-weight score."""
        z = self.log_odds(cell) + TIE_BREAK * fixed
        return round(1.0 / (1.0 + math.exp(-min(50.0, max(-50.0, z)))), 6)

    def summary(self) -> dict:
        """Per source: P(it reads failure-ish, b2 and up | failure), P(it reads none or success | not), and the log-
        likelihood ratio per category; the estimated failure rate."""
        out = {"failure_rate": round(self.rate_, 4), "conversations": self.n_, "iterations": self.iterations_}
        for s in SOURCES:
            out[s] = {"sensitivity": round(sum(self.p_fail_[s][c] for c in ("b2", "b3", "b4")), 4),
                      "specificity": round(self.p_ok_[s]["none"] + self.p_ok_[s]["success"], 4),
                      "llr": {c: round(v, 3) for c, v in self.llr_[s].items()}}
        return out


def fit_sources(cells: dict[str, tuple[int, float]]) -> SourceModel | None:
    """Dawid–Skene EM over `cells` ({cell: (conversations, sum of their fixed-weight scores)}); None when fewer than
    `MIN_JUDGED` conversations were judged (the judge's reliability cannot be told apart from chance then)."""
    keys = sorted(cells)
    if sum(cells[k][0] for k in keys if not k.startswith(MISSING)) < MIN_JUDGED:
        return None
    n = np.array([cells[k][0] for k in keys], dtype=float)
    r = np.clip(np.array([cells[k][1] for k in keys]) / n, 1e-3, 1 - 1e-3)  # start: the fixed-weight prior
    parts = [k.split("|") for k in keys]
    index = {s: np.array([CATEGORIES.index(p[i]) if p[i] != MISSING else -1 for p in parts]) for i, s in enumerate(SOURCES)}
    for it in range(1, MAX_ITER + 1):
        rate = float((n * r).sum() / n.sum())
        p1, p0 = {}, {}
        for s, idx in index.items():
            seen = idx >= 0
            w1 = np.bincount(idx[seen], weights=(n * r)[seen], minlength=len(CATEGORIES)) + 2 * PSEUDO * rate
            w0 = np.bincount(idx[seen], weights=(n * (1 - r))[seen], minlength=len(CATEGORIES)) + 2 * PSEUDO * (1 - rate)
            p1[s], p0[s] = w1 / w1.sum(), w0 / w0.sum()
        z = np.full(len(keys), math.log(rate / (1 - rate)))
        for s, idx in index.items():
            seen = idx >= 0
            z[seen] += np.log(p1[s][idx[seen]]) - np.log(p0[s][idx[seen]])
        new = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        done = float(np.abs(new - r).max()) < TOL
        r = new
        if done:
            break
    named = lambda p: {c: float(v) for c, v in zip(CATEGORIES, p)}
    return SourceModel(rate, {s: {c: float(math.log(p1[s][i] / p0[s][i])) for i, c in enumerate(CATEGORIES)}
                              for s in SOURCES},
                       {s: named(p1[s]) for s in SOURCES}, {s: named(p0[s]) for s in SOURCES}, int(n.sum()), it)
