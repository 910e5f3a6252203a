"""Rank clusters by how much more often they fail than the rest, with honest uncertainty.

Per cluster: size n, failures f (failure_score ≥ threshold), the failure rate with a 95% Wilson interval, the lift
over the overall rate p₀, and a one-sided binomial test of f against the rate outside the cluster, with
Benjamini–Hochberg control of the false discovery rate over all clusters (q-values).
Order: clusters with q ≤ alpha first, then by `score = log2(ci_low / p₀) · log10(1 + n)`: the conservative lift (the
interval's lower end over the base rate) times the order of magnitude of the size, so that a cluster with 2/2
failures (ci_low 0.34) ranks below 40/100 (ci_low 0.31 but ten times the evidence) and a huge cluster with a lift
of 1.1 does not top the list.
Privacy (as in Clio): a cluster's label, keywords and examples are shown only when at least `min_users` distinct
users are in it; smaller clusters appear as counts. The rule is off when the store has no user ids at all.
"""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from scipy import stats

from curation.cluster.scorer import uses_learned
from curation.errors import CurateError
from curation.messages import content_text, last_reply_index
from curation.signals import DEFAULT_THRESHOLD
from curation.store import Store, loads
from curation.store.failure_tables import cluster_assignments, clusters, failure_scores
from curation.store.model_tables import failure_model_scores
from curation.store.tables import conversations

MIN_USERS = 5
ALPHA = 0.05

# Aggregates over every assignment group by `cluster_id + 0`, so that SQLite reads the table in order and groups in
# a temporary tree: grouping by the bare column, it walks the cluster_id index instead, a random row access per
# assignment (5–7× slower at 300,000 rows; at 10M it would not fit the time). PostgreSQL plans both alike.
_CLUSTER = (cluster_assignments.c.cluster_id + 0).label("cluster_id")


def wilson(failures: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a binomial proportion (good at small n and at rates near 0 or 1), elementwise;
    `failures` may be fractional (a reward model's ties count half a success). n = 0 gives (0, 1)."""
    f, n = np.asarray(failures, dtype=float), np.asarray(n, dtype=float)
    safe = np.maximum(n, 1)
    p = f / safe
    centre = (p + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    return np.where(n > 0, np.clip(centre - half, 0, 1), 0.0), np.where(n > 0, np.clip(centre + half, 0, 1), 1.0)


def cluster_stats(store: Store, threshold: float = DEFAULT_THRESHOLD) -> dict[int, tuple[int, int, int]]:
    """{cluster_id: (size, failures, novel)} from the current assignments and failure scores.

    With the learned failure model in force (`scorer.active_scorer`), failures are the rounded sum of the members'
    calibrated P(failure) (the expected count); with the prior, the members scoring at least `threshold`."""
    if uses_learned(store):
        scores, failed = failure_model_scores, sa.func.coalesce(failure_model_scores.c.probability, 0.0)
    else:
        scores, failed = failure_scores, sa.case((failure_scores.c.failure_score >= threshold, 1), else_=0)
    query = (
        sa.select(_CLUSTER, sa.func.count(), sa.func.sum(failed), sa.func.sum(cluster_assignments.c.novel))
        .select_from(cluster_assignments.outerjoin(
            scores, scores.c.conversation_id == cluster_assignments.c.conversation_id))
        .group_by(_CLUSTER)
    )
    with store.connect() as conn:
        return {cid: (int(n), int(round(f or 0)), int(nv or 0)) for cid, n, f, nv in conn.execute(query)}



def has_user_ids(store: Store) -> bool:
    with store.connect() as conn:
        return conn.execute(
            sa.select(conversations.c.id).where(conversations.c.user_hash.is_not(None)).limit(1)
        ).first() is not None


def distinct_users(store: Store) -> dict[int, int]:
    """Distinct user ids per cluster, over the current assignments (the privacy threshold's count)."""
    query = (sa.select(_CLUSTER, sa.func.count(sa.distinct(conversations.c.user_hash)))
             .select_from(cluster_assignments.join(conversations, conversations.c.id == cluster_assignments.c.conversation_id))
             .group_by(_CLUSTER))
    with store.connect() as conn:
        return dict(conn.execute(query).all())


def rank_clusters(store: Store, top: int | None = None, threshold: float = DEFAULT_THRESHOLD,
                  min_users: int = MIN_USERS, alpha: float = ALPHA, n_examples: int = 3) -> list[dict]:
    """The rows of `curate clusters --json`, best first."""
    counts = cluster_stats(store, threshold)
    if not counts:
        return []
    with store.connect() as conn:
        meta = {r.id: r for r in conn.execute(
            sa.select(clusters.c.id, clusters.c.label, clusters.c.keywords, clusters.c.examples, clusters.c.n_users)
            .where(clusters.c.id.in_(list(counts))))}
    private = has_user_ids(store)
    ids = sorted(counts)
    n = np.array([counts[c][0] for c in ids])
    f = np.array([counts[c][1] for c in ids])
    N, F = n.sum(), f.sum()
    p0 = F / N
    low, high = wilson(f, n)
    rest_rate = np.where(N - n > 0, (F - f) / np.maximum(N - n, 1), p0)
    p_value = np.where(f > 0, stats.binom.sf(f - 1, n, np.clip(rest_rate, 1e-12, 1)), 1.0) if F else np.ones(len(ids))
    q_value = stats.false_discovery_control(p_value, method="bh")
    rate = f / n
    score = np.log2(np.maximum(low, 1e-6) / p0) * np.log10(1 + n) if F else np.zeros(len(ids))
    rows = []
    for i, cid in enumerate(ids):
        m = meta.get(cid)
        hidden = private and (m is None or (m.n_users or 0) < min_users)
        rows.append({
            "id": int(cid),
            "label": None if hidden or m is None else m.label,
            "keywords": [] if hidden or m is None else loads(m.keywords) or [],
            "size": int(n[i]), "failures": int(f[i]), "failure_rate": round(float(rate[i]), 6),
            "ci_low": round(float(low[i]), 6), "ci_high": round(float(high[i]), 6),
            "lift": round(float(rate[i] / p0), 4) if F else None,
            "p_value": float(p_value[i]), "q_value": float(q_value[i]),
            "significant": bool(q_value[i] <= alpha), "score": round(float(score[i]), 4),
            "novel": int(counts[cid][2]), "hidden": bool(hidden),
            "examples": [] if hidden or m is None else (loads(m.examples) or [])[:n_examples],
        })
    rows.sort(key=lambda r: (not r["significant"], -r["score"], -r["size"], r["id"]))
    rows = rows[:top] if top else rows
    _attach_examples(store, rows)
    return rows


def _attach_examples(store: Store, rows: list[dict]) -> None:
    """Replace example ids by {id, prompt, failure_score} read in one query."""
    wanted = [e for r in rows for e in r["examples"]]
    if not wanted:
        return
    found = {}
    with store.connect() as conn:
        for cid, messages, score in conn.execute(
            sa.select(conversations.c.id, conversations.c.messages, failure_scores.c.failure_score)
            .select_from(conversations.outerjoin(failure_scores, failure_scores.c.conversation_id == conversations.c.id))
            .where(conversations.c.id.in_(wanted))
        ):
            found[cid] = {"id": cid, "prompt": excerpt(prompt_of(loads(messages)), 200), "failure_score": score}
    for r in rows:
        r["examples"] = [found[e] for e in r["examples"] if e in found]


def show_cluster(store: Store, cluster_id: int, n: int = 5, threshold: float = DEFAULT_THRESHOLD,
                 min_users: int = MIN_USERS) -> dict:
    """One cluster: its ranking row, its most central conversations and its worst ones, with the signals that fired."""
    row = next((r for r in rank_clusters(store, threshold=threshold, min_users=min_users, n_examples=0)
                if r["id"] == cluster_id), None)
    if row is None:
        raise CurateError(f"no cluster {cluster_id}; `curate clusters` lists the cluster ids")
    with store.connect() as conn:
        trend = [{"run_id": r.run_id, "at": r.at, "size": r.size, "failures": r.failures, "failure_rate": r.failure_rate}
                 for r in conn.execute(sa.text(
                     "SELECT run_id, at, size, failures, failure_rate FROM cluster_history WHERE cluster_id = :c ORDER BY at"),
                     {"c": cluster_id})]
        if row["hidden"]:
            return {**row, "central": [], "worst": [], "trend": trend}
        central = loads(conn.execute(sa.select(clusters.c.examples).where(clusters.c.id == cluster_id)).scalar_one()) or []
        worst = [r[0] for r in conn.execute(
            sa.select(cluster_assignments.c.conversation_id)
            .join(failure_scores, failure_scores.c.conversation_id == cluster_assignments.c.conversation_id)
            .where(cluster_assignments.c.cluster_id == cluster_id, failure_scores.c.failure_score >= threshold)
            .order_by(failure_scores.c.failure_score.desc(), cluster_assignments.c.conversation_id).limit(n))]
        details = {}
        for cid, messages, score, signals, novel in conn.execute(
            sa.select(conversations.c.id, conversations.c.messages, failure_scores.c.failure_score, failure_scores.c.signals,
                      cluster_assignments.c.novel)
            .select_from(conversations.outerjoin(failure_scores, failure_scores.c.conversation_id == conversations.c.id)
                         .outerjoin(cluster_assignments, cluster_assignments.c.conversation_id == conversations.c.id))
            .where(conversations.c.id.in_(central[:n] + worst))
        ):
            messages = loads(messages)
            details[cid] = {"id": cid, "prompt": excerpt(prompt_of(messages), 300), "reply": excerpt(reply_of(messages), 300),
                            "failure_score": score, "signals": loads(signals) or [], "novel": bool(novel)}
    return {**row, "central": [details[c] for c in central[:n] if c in details],
            "worst": [details[c] for c in worst if c in details], "trend": trend}


def prompt_of(messages: list[dict]) -> str:
    """The last user turn before the last assistant message (what the conversation is about)."""
    last = last_reply_index(messages)
    return next((content_text(m) for m in reversed(messages[:last]) if m.get("role") == "user"), "")


def reply_of(messages: list[dict]) -> str:
    last = last_reply_index(messages)
    return "" if last is None else content_text(messages[last])


def excerpt(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
