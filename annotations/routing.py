"""Routing: which conversations people should rate. Strategies are small seeded objects with one method.

    strategy.select(candidates, budget) -> list[Pick]

`Candidates` holds what the store knows about each routable conversation (failure score, cluster, novelty), read
by `load_candidates`. The default, `FailureFirst`, spends half the budget on the highest failure scores, with no
cluster taking more than `max_cluster_share` of that part; 30% on the conversations the learned failure model is least
sure about (P(failure) nearest 0.5), spread over clusters the same way, so that the ratings teach it (until a first
fit exists this share goes to the failure share); and keeps an exploration share: conversations flagged novel
by clustering (outside every known cluster) and a uniform random sample, so the ratings also estimate the base rate
and catch failures that no detector sees. Any object with `select` works, like a scikit-learn estimator.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import sqlalchemy as sa
from scipy.stats import rankdata

from annotations.tables import annotation_records
from curation.cluster.scorer import active_scorer
from curation.config import SettingError, config_section, convert
from curation.errors import CurateError
from curation.store import Store, existing_ids
from curation.signals.judge import judge_verdicts
from curation.store.failure_tables import cluster_assignments, clusters, failure_scores
from curation.store.model_tables import failure_model_scores
from curation.store.tables import conversations, is_traffic


@dataclass(frozen=True)
class Pick:
    conversation_id: str
    priority: float  # the failure score (0 when unknown); the embedded server's queue serves high first
    strategy: str  # which share chose it: failure, uncertain, disagree, novel, random, ids
    conversation_id_b: str | None = None  # a second response to the same context (a preference record)


@dataclass
class Candidates:
    """Column arrays over routable conversations; `cluster` is -1 when unclustered, `score` 0 when unscored;
    `uncertainty` (4·p·(1 − p) of the newest failure-model fit, 1 = least sure) is None before the first fit."""

    ids: list[str]
    score: np.ndarray
    cluster: np.ndarray
    novel: np.ndarray
    uncertainty: np.ndarray | None = None
    disagreement: np.ndarray | None = None  # |judge's rank − failure model's rank| (0–1); None without both

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, ids: set[str]) -> "Candidates":
        """The candidates whose id is not in `ids`, in the same order."""
        keep = np.array([i not in ids for i in self.ids], dtype=bool)
        return Candidates([i for i, k in zip(self.ids, keep) if k], self.score[keep], self.cluster[keep], self.novel[keep],
                          None if self.uncertainty is None else self.uncertainty[keep],
                          None if self.disagreement is None else self.disagreement[keep])


@dataclass
class RoutingSettings:
    """The shares of the default strategy, `FailureFirst` (curate.toml `[routing]`, each from 0 to 1)."""

    uncertain: float = 0.3  # the learned failure model's least sure conversations (the failure share before a fit)
    explore: float = 0.2  # exploration: novel conversations and a uniform random sample
    novel_share: float = 0.5  # part of the exploration reserved for novel conversations
    max_cluster_share: float = 0.25  # most of the failure share one cluster may take
    disagree: float = 0.0  # where the LLM judge and the failure model disagree most (off: docs/performance.md)

    @classmethod
    def resolve(cls, home: Path) -> "RoutingSettings":
        """Defaults < curate.toml `[routing]`."""
        return cls.from_table(*config_section(home, "routing"))

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str = "curate.toml [routing]") -> "RoutingSettings":
        """Settings from a `[routing]` table; an unknown key, a share outside 0–1, or shares that leave the failure
        share below 0 is a SettingError naming the table (`where`) and the key."""
        names = [f.name for f in fields(cls)]
        values = {}
        for key, value in table.items():
            if key not in names:
                raise SettingError(f"{where}: unknown key {key!r}; allowed: {', '.join(names)}")
            values[key] = convert(value, float, f"{where} {key}")
            if not 0 <= values[key] <= 1:
                raise SettingError(f"{where} {key}: a share from 0 to 1, not {value!r}")
        settings = cls(**values)
        if settings.uncertain + settings.explore + settings.disagree > 1:
            raise SettingError(f"{where}: uncertain + explore + disagree must leave a share (≥ 0) for failure")
        return settings


class Strategy(Protocol):
    def select(self, candidates: Candidates, budget: int) -> list[Pick]: ...


class FailureFirst:
    """The highest failure scores and the learned model's least sure conversations, each spread over clusters,
    plus exploration (novel + random).

    uncertain: share of the budget for the conversations the learned failure model is least sure about (default 0.3;
        it joins the failure share before the first fit, i.e. while `candidates.uncertainty` is None).
    explore: share of the budget for exploration (default 0.2).
    novel_share: part of the exploration reserved for novel conversations (default 0.5; the rest is random).
    max_cluster_share: most of the failure share one cluster may take (default 0.25), relaxed only when
        too few clusters have candidates to fill the budget.
    disagree: share of the budget where the LLM judge and the failure model disagree most (default 0: off, see
        docs/performance.md, "The judge as evidence"); it joins the failure share until both exist.
    random_state: seed for tie-breaking and the random sample.
    """

    name = "failure"

    def __init__(self, explore: float = RoutingSettings.explore, novel_share: float = RoutingSettings.novel_share,
                 max_cluster_share: float = RoutingSettings.max_cluster_share,
                 uncertain: float = RoutingSettings.uncertain, disagree: float = RoutingSettings.disagree,
                 random_state: int = 0):
        self.explore = explore
        self.disagree = disagree
        self.uncertain = uncertain
        self.novel_share = novel_share
        self.max_cluster_share = max_cluster_share
        self.random_state = random_state

    def select(self, candidates: Candidates, budget: int) -> list[Pick]:
        rng = np.random.default_rng(self.random_state)
        n = len(candidates)
        budget = min(budget, n)
        n_explore = int(round(budget * self.explore))
        n_uncertain = 0 if candidates.uncertainty is None else int(round(budget * self.uncertain))
        n_disagree = 0 if candidates.disagreement is None else int(round(budget * self.disagree))
        n_failure = budget - n_explore - n_uncertain - n_disagree
        taken = np.zeros(n, dtype=bool)
        picks: list[Pick] = []
        tiebreak = rng.random(n)
        # failure share: by score, ties in a seeded random order, at most `cap` per cluster on the first pass
        self._spread(candidates, np.lexsort((tiebreak, -candidates.score)), n_failure, "failure", taken, picks)
        if n_uncertain:  # the least sure first, spread over clusters the same way
            self._spread(candidates, np.lexsort((tiebreak, -candidates.uncertainty)), n_uncertain, "uncertain", taken,
                         picks)
        if n_disagree:
            self._spread(candidates, np.lexsort((tiebreak, -candidates.disagreement)), n_disagree, "disagree", taken,
                         picks)

        # exploration: novel conversations first (up to their share), the rest uniformly at random
        n_novel = int(round(n_explore * self.novel_share))
        for label, pool, limit in (("novel", candidates.novel, n_novel), ("random", np.ones(n, dtype=bool), None)):
            available = np.flatnonzero(pool & ~taken)
            want = (budget - len(picks)) if limit is None else min(limit, budget - len(picks))
            for i in rng.permutation(available)[: max(want, 0)]:
                taken[i] = True
                picks.append(Pick(candidates.ids[i], float(candidates.score[i]), label))
        return picks

    def _spread(self, candidates: Candidates, order: np.ndarray, want: int, label: str, taken: np.ndarray,
                picks: list[Pick]) -> None:
        """Take `want` untaken candidates in `order`, at most `max_cluster_share` of them per cluster on a first pass."""
        cap = max(1, math.ceil(self.max_cluster_share * want))
        per_cluster: dict[int, int] = {}
        goal = len(picks) + want
        for capped in (True, False):
            for i in order:
                if len(picks) >= goal:
                    break
                cluster = int(candidates.cluster[i])
                if taken[i] or (capped and cluster >= 0 and per_cluster.get(cluster, 0) >= cap):
                    continue
                taken[i] = True
                per_cluster[cluster] = per_cluster.get(cluster, 0) + 1
                picks.append(Pick(candidates.ids[i], float(candidates.score[i]), label))


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


def get_strategy(strategy: str | Strategy | None, mix: RoutingSettings | dict | None = None) -> Strategy:
    """A strategy by name (default `failure`, with the shares of `mix`: settings or a `[routing]` table), or
    `strategy` itself when it is an object."""
    if strategy is None or strategy == "failure":
        settings = mix if isinstance(mix, RoutingSettings) else RoutingSettings.from_table(mix or {})
        return FailureFirst(**asdict(settings))
    if isinstance(strategy, str):
        try:
            return STRATEGIES[strategy]()
        except KeyError:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}") from None
    return strategy


def routing_strategy(store: Store, strategy: str | Strategy | None = None) -> Strategy:
    """The strategy push and generate route with: `get_strategy` with curate.toml `[routing]`, read one way for both
    (and checked even for a strategy that does not use it, so a bad file fails every command alike)."""
    return get_strategy(strategy, RoutingSettings.resolve(store.home))


def load_candidates(store: Store, dataset: str, generated: bool = False) -> Candidates:
    """Conversations with an assistant reply that are not routed to another dataset, with score/cluster/novelty.

    While the learned failure model ranks (`curation.cluster.scorer`), the score is its P(failure), else the prior's
    failure score; once any fit exists (promoted or not) the candidates carry its uncertainty. Those already in `dataset` are included; push leaves them out of its choice (`Candidates.without`), so a
    budget counts new records. Generated candidates are left out unless `generated`.
    """
    c, f, a = conversations.c, failure_scores.c, cluster_assignments.c
    r = annotation_records.c
    elsewhere = sa.union(
        sa.select(r.conversation_id).where(r.dataset != dataset),
        sa.select(r.conversation_id_b).where(r.conversation_id_b.is_not(None)),
    )
    scorer, m = active_scorer(store), failure_model_scores.c
    learned, fitted = scorer["name"] == "learned", scorer.get("version") is not None
    query = (
        sa.select(c.id, sa.func.coalesce(m.probability, f.failure_score) if learned else f.failure_score, a.cluster_id,
                  a.novel, m.uncertainty, m.probability)
        .select_from(
            conversations.outerjoin(failure_scores, f.conversation_id == c.id).outerjoin(
                cluster_assignments, a.conversation_id == c.id
            ).outerjoin(failure_model_scores, m.conversation_id == c.id)
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
        uncertainty=np.array([r[4] or 0.0 for r in rows], dtype=float) if fitted else None,
        disagreement=disagreement(store, [r[0] for r in rows], [r[5] for r in rows]) if fitted else None,
    )


def disagreement(store: Store, ids: list[str], probability: list[float | None]) -> np.ndarray | None:
    """|the judge's rank − the failure model's rank| per candidate, each a percentile among the candidates that have
    both (the judge's badness = 8 − helpfulness − correctness); 0 where one is missing; None with no judgement."""
    verdicts = judge_verdicts(store, ids)
    both = np.array([i in verdicts and p is not None for i, p in zip(ids, probability)], dtype=bool)
    if both.sum() < 2:
        return None
    bad = np.array([8 - sum(2 if verdicts[i][a] is None else verdicts[i][a] for a in ("helpfulness", "correctness"))
                    for i, k in zip(ids, both) if k], dtype=float)
    p = np.array([q for q, k in zip(probability, both) if k], dtype=float)
    out = np.zeros(len(ids))
    out[both] = np.abs(rankdata(bad) - rankdata(p)) / both.sum()
    return out


def cluster_labels(store: Store) -> dict[int, str]:
    with store.connect() as conn:
        return {cid: label for cid, label in conn.execute(sa.select(clusters.c.id, clusters.c.label))}


def known_ids(store: Store, ids: Sequence[str]) -> list[str]:
    """`ids` in order without repeats; a CurateError naming the first one the store does not hold."""
    wanted = list(dict.fromkeys(ids))
    with store.connect() as conn:
        known = existing_ids(conn, conversations.c.id, wanted)
    missing = [i for i in wanted if i not in known]
    if missing:
        raise CurateError(f"{len(missing)} of the --ids are not in the store (first: {missing[0]!r}); ingest them first")
    return wanted


def choose(store: Store, dataset: str, budget: int | None, ids: Sequence[str] | None,
            strategy: Strategy | None) -> tuple[list[Pick], int]:
    """What a push of `budget` (by `strategy`) or of exactly `ids` into `dataset` sends: the picks, and how many of
    `ids` were skipped (already in the dataset or routed elsewhere, or without a reply)."""
    with store.connect() as conn:
        in_dataset = set(conn.execute(
            sa.select(annotation_records.c.conversation_id).where(annotation_records.c.dataset == dataset)
        ).scalars())
        # a second response (B) of any pair is not routed again on its own
        taken = in_dataset | set(conn.execute(
            sa.select(annotation_records.c.conversation_id_b).where(annotation_records.c.conversation_id_b.is_not(None))
        ).scalars())
    if ids is not None:
        wanted = known_ids(store, ids)
        routable = set(load_candidates(store, dataset).ids)
        picks = [Pick(i, 0.0, "ids") for i in wanted if i in routable and i not in taken]
        return picks, len(wanted) - len(picks)
    return strategy.select(load_candidates(store, dataset).without(taken), budget), 0
