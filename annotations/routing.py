"""Routing: which conversations people should rate. Strategies are small seeded objects with one method.

    strategy.select(candidates, budget) -> list[Pick]

`Candidates` holds what the store knows about each routable conversation (failure score, cluster, novelty), read
by `load_candidates`. The default, `FailureFirst`, spends most of the budget on the highest failure scores, with no
cluster taking more than `max_cluster_share` of that part, and keeps an exploration share: conversations flagged
novel by clustering (outside every known cluster) and a uniform random sample, so the ratings also estimate the
base rate and catch failures that no detector sees. Any object with `select` works, like a scikit-learn estimator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import sqlalchemy as sa

from annotations.tables import annotation_records
from curation.store import Store
from curation.store.failure_tables import cluster_assignments, clusters, failure_scores
from curation.store.tables import conversations, is_traffic


@dataclass(frozen=True)
class Pick:
    conversation_id: str
    priority: float  # the failure score (0 when unknown); the embedded server's queue serves high first
    strategy: str  # which share chose it: failure, novel, random, ids
    conversation_id_b: str | None = None  # a second response to the same context (a preference record)


@dataclass
class Candidates:
    """Column arrays over routable conversations; `cluster` is -1 when unclustered, `score` 0 when unscored."""

    ids: list[str]
    score: np.ndarray
    cluster: np.ndarray
    novel: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, ids: set[str]) -> "Candidates":
        """The candidates whose id is not in `ids`, in the same order."""
        keep = np.array([i not in ids for i in self.ids], dtype=bool)
        return Candidates([i for i, k in zip(self.ids, keep) if k], self.score[keep], self.cluster[keep], self.novel[keep])


class Strategy(Protocol):
    def select(self, candidates: Candidates, budget: int) -> list[Pick]: ...


class FailureFirst:
    """Mostly the highest failure scores, spread over clusters, plus exploration (novel + random).

    explore: share of the budget for exploration (default 0.2).
    novel_share: part of the exploration reserved for novel conversations (default 0.5; the rest is random).
    max_cluster_share: most of the failure share one cluster may take (default 0.25), relaxed only when
        too few clusters have candidates to fill the budget.
    random_state: seed for tie-breaking and the random sample.
    """

    name = "failure"

    def __init__(self, explore: float = 0.2, novel_share: float = 0.5, max_cluster_share: float = 0.25, random_state: int = 0):
        self.explore = explore
        self.novel_share = novel_share
        self.max_cluster_share = max_cluster_share
        self.random_state = random_state

    def select(self, candidates: Candidates, budget: int) -> list[Pick]:
        rng = np.random.default_rng(self.random_state)
        n = len(candidates)
        budget = min(budget, n)
        n_explore = int(round(budget * self.explore))
        n_failure = budget - n_explore
        taken = np.zeros(n, dtype=bool)
        picks: list[Pick] = []

        # failure share: by score, ties in a seeded random order, at most `cap` per cluster on the first pass
        order = np.lexsort((rng.random(n), -candidates.score))
        cap = max(1, math.ceil(self.max_cluster_share * n_failure))
        per_cluster: dict[int, int] = {}
        for capped in (True, False):
            for i in order:
                if len(picks) >= n_failure:
                    break
                cluster = int(candidates.cluster[i])
                if taken[i] or (capped and cluster >= 0 and per_cluster.get(cluster, 0) >= cap):
                    continue
                taken[i] = True
                per_cluster[cluster] = per_cluster.get(cluster, 0) + 1
                picks.append(Pick(candidates.ids[i], float(candidates.score[i]), "failure"))

        # exploration: novel conversations first (up to their share), the rest uniformly at random
        n_novel = int(round(n_explore * self.novel_share))
        for label, pool, limit in (("novel", candidates.novel, n_novel), ("random", np.ones(n, dtype=bool), None)):
            available = np.flatnonzero(pool & ~taken)
            want = (budget - len(picks)) if limit is None else min(limit, budget - len(picks))
            for i in rng.permutation(available)[: max(want, 0)]:
                taken[i] = True
                picks.append(Pick(candidates.ids[i], float(candidates.score[i]), label))
        return picks


class RandomSample:
    """A uniform random sample: the unbiased base rate of failures (and a control group for the default)."""

    name = "random"

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def select(self, candidates: Candidates, budget: int) -> list[Pick]:
        rng = np.random.default_rng(self.random_state)
        chosen = rng.permutation(len(candidates))[: min(budget, len(candidates))]
        return [Pick(candidates.ids[i], float(candidates.score[i]), "random") for i in chosen]


STRATEGIES = {"failure": FailureFirst, "random": RandomSample}


def get_strategy(strategy: str | Strategy | None) -> Strategy:
    if strategy is None:
        return FailureFirst()
    if isinstance(strategy, str):
        try:
            return STRATEGIES[strategy]()
        except KeyError:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}") from None
    return strategy


def load_candidates(store: Store, dataset: str, generated: bool = False) -> Candidates:
    """Conversations with an assistant reply that are not routed to another dataset, with score/cluster/novelty.

    Those already in `dataset` are included; push leaves them out of its choice (`Candidates.without`), so a
    budget counts new records. Generated candidates are left out unless `generated`.
    """
    c, f, a = conversations.c, failure_scores.c, cluster_assignments.c
    r = annotation_records.c
    elsewhere = sa.union(
        sa.select(r.conversation_id).where(r.dataset != dataset),
        sa.select(r.conversation_id_b).where(r.conversation_id_b.is_not(None)),
    )
    query = (
        sa.select(c.id, f.failure_score, a.cluster_id, a.novel)
        .select_from(
            conversations.outerjoin(failure_scores, f.conversation_id == c.id).outerjoin(
                cluster_assignments, a.conversation_id == c.id
            )
        )
        .where(c.messages.like('%"assistant"%'), c.id.not_in(elsewhere),
               sa.true() if generated else is_traffic())
        .order_by(c.id)
    )
    with store.connect() as conn:
        rows = conn.execute(query).all()
    return Candidates(
        ids=[r[0] for r in rows],
        score=np.array([r[1] if r[1] is not None else 0.0 for r in rows], dtype=float),
        cluster=np.array([r[2] if r[2] is not None else -1 for r in rows], dtype=int),
        novel=np.array([bool(r[3]) for r in rows], dtype=bool),
    )


def cluster_labels(store: Store) -> dict[int, str]:
    with store.connect() as conn:
        return {cid: label for cid, label in conn.execute(sa.select(clusters.c.id, clusters.c.label))}
