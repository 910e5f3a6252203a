"""Run the detectors over the store and combine their signals into one `failure_score` per conversation.

Combination (documented in docs/concepts-failures.md): failure evidence combines as a noisy-OR,
`1 − Π(1 − wᵢ·vᵢ)` over signals with positive weight, and success evidence (negative weight, e.g. a thumbs up)
then scales it by `Π(1 − |wⱼ|·vⱼ)`. The score stays in 0..1, one strong signal is enough to make it high, and
several weak ones add up. A conversation counts as a failure when its score is at least `threshold` (0.5).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from curation.config import load_config_file
from curation.errors import ConfigError
from curation.signals.base import ConversationView, Detector, Signal
from curation.signals.feedback import feedback_detectors
from curation.signals.response import response_detectors
from curation.store import Store, dumps, loads, utcnow
from curation.store.failure_tables import failure_scores, rewards
from curation.store.tables import conversations, feedback

DEFAULT_THRESHOLD = 0.5
BATCH = 2_000


def default_detectors() -> list[Detector]:
    return feedback_detectors() + response_detectors()


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
    for source, given in (("curate.toml [signals.weights]", load_config_file(store.home).get("signals", {}).get("weights", {})),
                          ("weights", weights or {})):
        for name, value in given.items():
            if name not in resolved:
                raise ConfigError(f"{source}: no detector named {name!r}; known: {', '.join(sorted(resolved))}")
            if not isinstance(value, (int, float)) or not -1 <= value <= 1:
                raise ConfigError(f"{source}: weight of {name!r} must be a number from -1 to 1")
            resolved[name] = float(value)
    return resolved


def score_conversation(conv: ConversationView, detectors: list[Detector], weights: dict[str, float]) -> tuple[float, list[dict]]:
    """The failure score of one conversation and the signals that fired, each with its weight and reason."""
    fired = [s for d in detectors if (s := d(conv)) is not None and weights[s.name] != 0]
    rows = [{"name": s.name, "value": round(float(s.value), 4), "weight": weights[s.name], "why": s.why} for s in fired]
    return combine(fired, weights), rows


def score_failures(store: Store, detectors: list[Detector] | None = None, weights: dict[str, float] | None = None,
                   reward_model: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                   progress: bool | None = None) -> dict:
    """Score every conversation in the store and replace its row in `failure_scores`.

    `reward_model` picks whose rewards the low_reward detector reads (default: the newest model_version in `rewards`).
    """
    detectors = list(detectors) if detectors is not None else default_detectors()
    weights = resolve_weights(store, detectors, weights)
    run_id = store.start_run("score", {"detectors": [d.name for d in detectors], "weights": weights,
                                       "threshold": threshold, "reward_model": reward_model})
    try:
        version, reward_of = _load_rewards(store, reward_model)
        total = store.count(conversations)
        scored, failures, counts = 0, 0, {}
        with tqdm(total=total, desc="scoring", unit="conv", disable=None if progress is None else not progress) as bar:
            for batch in _batches(store, reward_of):
                rows = []
                for conv in batch:
                    score, fired = score_conversation(conv, detectors, weights)
                    failures += score >= threshold
                    for s in fired:
                        counts[s["name"]] = counts.get(s["name"], 0) + 1
                    rows.append({"conversation_id": conv.id, "failure_score": score, "signals": dumps(fired),
                                 "run_id": run_id, "scored_at": utcnow()})
                ids = [r["conversation_id"] for r in rows]
                with store.begin() as conn:
                    conn.execute(failure_scores.delete().where(failure_scores.c.conversation_id.in_(ids)))
                    conn.execute(failure_scores.insert(), rows)
                scored += len(rows)
                bar.update(len(rows))
        summary = {"scored": scored, "failures": int(failures), "failure_rate": failures / scored if scored else 0.0,
                   "threshold": threshold, "signals": dict(sorted(counts.items())), "reward_model": version,
                   "run_id": run_id}
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "done", summary)
    return summary


def _load_rewards(store: Store, version: str | None) -> tuple[str | None, dict[str, tuple[float, float]]]:
    """(model_version, {conversation_id: (reward, percentile)}); the newest version unless one is named."""
    with store.connect() as conn:
        if version is None:
            version = conn.execute(
                sa.select(rewards.c.model_version).order_by(rewards.c.scored_at.desc()).limit(1)
            ).scalar_one_or_none()
        if version is None:
            return None, {}
        rows = conn.execute(
            sa.select(rewards.c.conversation_id, rewards.c.reward).where(rewards.c.model_version == version)
        ).all()
    if not rows:
        raise ConfigError(f"no rewards stored for reward model {version!r}; run `curate reward score` first")
    values = np.array([r[1] for r in rows], dtype=float)
    pct = values.argsort().argsort() / max(1, len(values) - 1)
    return version, {r[0]: (float(r[1]), float(p)) for r, p in zip(rows, pct)}


def _batches(store: Store, reward_of: dict[str, tuple[float, float]]) -> Iterator[list[ConversationView]]:
    """Conversations with their feedback, BATCH at a time, by keyset pagination so memory stays bounded."""
    last = None
    while True:
        query = sa.select(conversations.c.id, conversations.c.messages).order_by(conversations.c.id).limit(BATCH)
        if last is not None:
            query = query.where(conversations.c.id > last)
        with store.connect() as conn:
            rows = conn.execute(query).all()
            if not rows:
                return
            ids = [r[0] for r in rows]
            events: dict[str, list[dict]] = {}
            for cid, kind, value, turn, at in conn.execute(
                sa.select(feedback.c.conversation_id, feedback.c.type, feedback.c.value, feedback.c.turn, feedback.c.at)
                .where(feedback.c.conversation_id.in_(ids))
            ):
                events.setdefault(cid, []).append({"type": kind, "value": loads(value), "turn": turn, "at": at})
        batch = []
        for cid, messages in rows:
            reward, pct = reward_of.get(cid, (None, None))
            batch.append(ConversationView(cid, loads(messages), events.get(cid, []), reward, pct))
        yield batch
        last = ids[-1]


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
