"""Run the detectors over the store and combine their signals into one `failure_score` per conversation.

Combination (documented in docs/concepts-failures.md): failure evidence combines as a noisy-OR,
`1 − Π(1 − wᵢ·vᵢ)` over signals with positive weight, and success evidence (negative weight, e.g. a thumbs up)
then scales it by `Π(1 − |wⱼ|·vⱼ)`. The score stays in 0..1, one strong signal is enough to make it high, and
several weak ones add up. A conversation counts as a failure when its score is at least `threshold` (0.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from curation.config import SettingError, config_section
from curation.engine import resolve_engine
from curation.engine.ray_pool import add_counts, id_pages
from curation.errors import ConfigError
from curation.signals.base import ConversationView, Detector, Signal
from curation.signals.feedback import feedback_detectors
from curation.signals.judge import JudgeVerdict, judge_verdicts
from curation.signals.response import response_detectors
from curation.store import Store, dumps, loads, utcnow
from curation.store.failure_tables import failure_scores, rewards
from curation.store.tables import conversations, feedback

DEFAULT_THRESHOLD = 0.5
BATCH = 2_000


def default_detectors() -> list[Detector]:
    return feedback_detectors() + response_detectors() + [JudgeVerdict()]


def combine(signals: Iterable[Signal], weights: dict[str, float]) -> float:
    fail, keep = 1.0, 1.0
    for s in signals:
        w = weights[s.name]
        if w >= 0:
            fail *= 1.0 - min(1.0, w * s.value)
        else:
            keep *= 1.0 - min(1.0, -w * s.value)
    return round((1.0 - fail) * keep, 6)


def resolve_weights(store: Store, detectors: list[Detector], weights: dict[str, float] | None) -> dict[str, float]:
    """Each detector's own weight < `[signals.weights]` in curate.toml < the `weights` argument."""
    resolved = {d.name: float(d.weight) for d in detectors}
    table, where = config_section(store.home, "signals.weights")
    for source, given, error in ((where, table, SettingError), ("weights", weights or {}, ConfigError)):
        for name, value in given.items():
            if name not in resolved:
                raise error(f"{source}: no detector named {name!r}; known: {', '.join(sorted(resolved))}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
                raise error(f"{source}: weight of {name!r} must be a number from -1 to 1, not {value!r}")
            resolved[name] = float(value)
    return resolved


def score_conversation(conv: ConversationView, detectors: list[Detector], weights: dict[str, float]) -> tuple[float, list[dict]]:
    """The failure score of one conversation and the signals that fired, each with its weight and reason."""
    fired = [s for d in detectors if (s := d(conv)) is not None and weights[s.name] != 0]
    rows = [{"name": s.name, "value": round(float(s.value), 4), "weight": weights[s.name], "why": s.why} for s in fired]
    return combine(fired, weights), rows


def score_failures(store: Store, detectors: list[Detector] | None = None, weights: dict[str, float] | None = None,
                   reward_model: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                   progress: bool | None = None, engine: str | None = None, address: str | None = None) -> dict:
    """Score every conversation in the store and replace its row in `failure_scores`.

    `reward_model` picks whose rewards the low_reward detector reads (default: the newest model_version in `rewards`).
    `engine="ray"` scores on the Ray cluster at `address` (curation.engine), BATCH conversations per chunk; this
    process then reads only ids, so its memory does not grow with the store. The scores are the same either way.
    """
    chosen = resolve_engine(store, engine, address)
    detectors = list(detectors) if detectors is not None else default_detectors()
    weights = resolve_weights(store, detectors, weights)
    with store.run("score", {"detectors": [d.name for d in detectors], "weights": weights,
                             "threshold": threshold, "reward_model": reward_model, "engine": chosen.kind}) as run:
        job = _FailureJob(detectors, weights, _reward_version(store, reward_model), threshold, run.id)
        total = store.count(conversations)
        if chosen.kind == "ray":
            from curation.engine import ray_pool

            counts = ray_pool.run(store, job, None, total, BATCH, chosen.address, "scoring", progress)
        else:
            counts = {}
            with tqdm(total=total, desc="scoring", unit="conv", disable=None if progress is None else not progress) as bar:
                for ids in id_pages(store, None, BATCH):
                    add_counts(counts, job(store, ids))
                    bar.update(len(ids))
        scored, failures = counts.get("scored", 0), counts.get("failures", 0)
        summary = {"scored": scored, "failures": int(failures), "failure_rate": failures / scored if scored else 0.0,
                   "threshold": threshold, "signals": dict(sorted(counts.get("signals", {}).items())),
                   "reward_model": job.version, "run_id": run.id}
        if chosen.kind == "ray":
            summary.update(engine="ray", workers=counts["workers"])
        run.finish(summary)
    return summary


@dataclass
class _FailureJob:
    """Scores chunks of conversation ids and replaces their rows, one transaction per chunk: the local loop's body,
    and what each Ray worker runs. The reward percentiles come from the sorted rewards of `version`, loaded once per
    process (8 bytes a conversation), never from a table of every conversation's reward."""

    detectors: list[Detector]
    weights: dict[str, float]
    version: str | None
    threshold: float
    run_id: str

    def __call__(self, store: Store, ids: list[str]) -> dict:
        if getattr(self, "sorted_", None) is None:
            self.sorted_ = _sorted_rewards(store, self.version)
        rows, failures, counts = [], 0, {}
        for conv in _views(store, ids, self.version, self.sorted_):
            score, fired = score_conversation(conv, self.detectors, self.weights)
            failures += score >= self.threshold
            for s in fired:
                counts[s["name"]] = counts.get(s["name"], 0) + 1
            rows.append({"conversation_id": conv.id, "failure_score": score, "signals": dumps(fired),
                         "run_id": self.run_id, "scored_at": utcnow()})
        if rows:
            with store.begin() as conn:
                done = [r["conversation_id"] for r in rows]
                conn.execute(failure_scores.delete().where(failure_scores.c.conversation_id.in_(done)))
                conn.execute(failure_scores.insert(), rows)
        return {"scored": len(rows), "failures": int(failures), "signals": counts}


def _reward_version(store: Store, version: str | None) -> str | None:
    """The reward model whose rewards are read: `version`, else the newest; None when nothing was scored."""
    with store.connect() as conn:
        if version is None:
            version = conn.execute(
                sa.select(rewards.c.model_version).order_by(rewards.c.scored_at.desc()).limit(1)
            ).scalar_one_or_none()
            if version is None:
                return None
        stored = conn.execute(sa.select(rewards.c.conversation_id).where(rewards.c.model_version == version).limit(1)).first()
    if stored is None:
        raise ConfigError(f"no rewards stored for reward model {version!r}; run `curate reward score` first")
    return version


def _sorted_rewards(store: Store, version: str | None) -> np.ndarray:
    if version is None:
        return np.empty(0)
    with store.connect() as conn:
        values = conn.execute(sa.select(rewards.c.reward).where(rewards.c.model_version == version)).scalars().all()
    return np.sort(np.asarray(values, dtype=float))


def reward_percentile(sorted_rewards: np.ndarray, reward: float) -> float:
    """The share of the other rewards below `reward` (0 = the lowest, 1 = the highest); equal rewards share one."""
    return float(np.searchsorted(sorted_rewards, reward, side="left")) / max(1, len(sorted_rewards) - 1)


def _views(store: Store, ids: list[str], version: str | None, sorted_rewards: np.ndarray) -> list[ConversationView]:
    """The conversations `ids` with their feedback and reward, in id order."""
    with store.connect() as conn:
        rows = conn.execute(sa.select(conversations.c.id, conversations.c.messages)
                            .where(conversations.c.id.in_(ids)).order_by(conversations.c.id)).all()
        events: dict[str, list[dict]] = {}
        for cid, kind, value, turn, at in conn.execute(
            sa.select(feedback.c.conversation_id, feedback.c.type, feedback.c.value, feedback.c.turn, feedback.c.at)
            .where(feedback.c.conversation_id.in_(ids))
        ):
            events.setdefault(cid, []).append({"type": kind, "value": loads(value), "turn": turn, "at": at})
        reward_of = dict(conn.execute(sa.select(rewards.c.conversation_id, rewards.c.reward).where(
            rewards.c.model_version == version, rewards.c.conversation_id.in_(ids))).all()) if version is not None else {}
    verdicts = judge_verdicts(store, ids)
    views = []
    for cid, messages in rows:
        reward = reward_of.get(cid)
        pct = None if reward is None else reward_percentile(sorted_rewards, reward)
        views.append(ConversationView(cid, loads(messages), events.get(cid, []), reward, pct, verdicts.get(cid)))
    return views


def load_scores(store: Store, ids: list[str] | None = None) -> dict[str, tuple[float, list[dict]]]:
    """{conversation_id: (failure_score, signals)} for the given ids (all when None)."""
    query = sa.select(failure_scores.c.conversation_id, failure_scores.c.failure_score, failure_scores.c.signals)
    out = {}
    with store.connect() as conn:
        chunks = [None] if ids is None else [ids[i : i + 5000] for i in range(0, len(ids), 5000)]
        for chunk in chunks:
            q = query if chunk is None else query.where(failure_scores.c.conversation_id.in_(chunk))
            for cid, score, signals in conn.execute(q):
                out[cid] = (score, loads(signals) or [])
    return out
