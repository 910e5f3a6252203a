"""What the report shows, gathered from the store: a 2-D map, the ranked clusters, and each cluster's history."""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sklearn.decomposition import PCA

from curation.cluster.rank import MIN_USERS, excerpt, rank_clusters
from curation.cluster.scorer import active_scorer, fit_history
from curation.errors import CurateError
from curation.messages import content_text
from curation.signals import DEFAULT_THRESHOLD
from curation.signals.feedback import CORRECTION
from curation.store import Store, loads
from curation.store.failure_tables import cluster_assignments, cluster_history, failure_scores
from curation.store.tables import conversations, feedback, runs

CANDIDATES = 60  # failing conversations read per cluster to find distinct examples
NEGATIVE = ("thumbs_down", "flag", "regenerated", "edited")  # feedback whose `turn` names the reply that failed


def gather(store: Store, top: int = 20, max_points: int = 5_000, projection: str = "pca", seed: int = 0,
           min_users: int = MIN_USERS, n_examples: int = 2) -> dict:
    """Everything the report draws; each top row gains "shown_examples" (distinct, with the failed reply)."""
    rows = rank_clusters(store, min_users=min_users)
    if not rows:
        raise CurateError("nothing to report yet; run `curate embed` and `curate cluster` first")
    shown = rows[:top]
    for row in shown:
        row["shown_examples"] = [] if row["hidden"] else cluster_examples(store, row, n_examples)
    return {"clusters": rows, "top": shown, "points": _map(store, max_points, projection, seed),
            "history": cluster_trend(store), "totals": _totals(rows), "scorer": active_scorer(store),
            "fits": fit_history(store)}


def cluster_examples(store: Store, row: dict, n: int = 2, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Up to `n` of the cluster's worst failing conversations with distinct prompts, then its central ones if
    too few fail: each {id, prompt, reply, follow_up, failure_score, signals}."""
    with store.connect() as conn:
        failing = conn.execute(
            sa.select(conversations.c.id, conversations.c.messages, failure_scores.c.failure_score, failure_scores.c.signals)
            .select_from(cluster_assignments
                         .join(conversations, conversations.c.id == cluster_assignments.c.conversation_id)
                         .join(failure_scores, failure_scores.c.conversation_id == cluster_assignments.c.conversation_id))
            .where(cluster_assignments.c.cluster_id == row["id"], failure_scores.c.failure_score >= threshold)
            .order_by(failure_scores.c.failure_score.desc(), conversations.c.id).limit(CANDIDATES)).all()
        central = [e["id"] for e in row["examples"]]
        more = conn.execute(
            sa.select(conversations.c.id, conversations.c.messages, failure_scores.c.failure_score, failure_scores.c.signals)
            .select_from(conversations.outerjoin(failure_scores, failure_scores.c.conversation_id == conversations.c.id))
            .where(conversations.c.id.in_(central))).all() if central else []
        candidates = [*failing, *sorted(more, key=lambda r: central.index(r[0]))]
        flagged: dict[str, int] = {}
        for cid, turn in conn.execute(
            sa.select(feedback.c.conversation_id, feedback.c.turn)
            .where(feedback.c.conversation_id.in_([r[0] for r in candidates]), feedback.c.type.in_(NEGATIVE),
                   feedback.c.turn.is_not(None))):
            flagged[cid] = min(turn, flagged.get(cid, turn))
    chosen, seen = [], set()
    for cid, messages, score, signals in candidates:
        turn = failed_exchange(loads(messages), flagged.get(cid))
        key = " ".join(turn["prompt"].casefold().split())
        if key in seen:
            continue
        seen.add(key)
        chosen.append({"id": cid, **{k: excerpt(v, 240) for k, v in turn.items()}, "failure_score": score or 0.0,
                       "signals": loads(signals) or []})
        if len(chosen) == n:
            break
    return chosen


def failed_exchange(messages: list[dict], flagged: int | None = None) -> dict:
    """The assistant reply that failed, the user turn it answered, and what the user said next ("" when nothing).

    The failed reply is the one negative feedback points at (`flagged`: a thumbs down, flag, regenerate or edit
    with a turn), else the one a user turn corrected (the correction signal's pattern: "that's wrong", "you
    didn't …"), else the last assistant reply, the one that feedback without a turn and the detectors rate.
    """
    replies = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    failed = replies[-1] if replies else len(messages)
    if flagged in replies:
        failed = flagged
    else:
        for i, m in enumerate(messages):
            if m.get("role") == "user" and replies and replies[0] < i and CORRECTION.search(content_text(m)):
                failed = max(j for j in replies if j < i)
                break
    prompt = next((content_text(m) for m in reversed(messages[:failed]) if m.get("role") == "user"), "")
    reply = content_text(messages[failed]) if failed < len(messages) else ""
    follow_up = next((content_text(m) for m in messages[failed + 1:] if m.get("role") == "user"), "")
    return {"prompt": prompt, "reply": reply, "follow_up": follow_up}


def _totals(rows: list[dict]) -> dict:
    n = sum(r["size"] for r in rows)
    f = sum(r["failures"] for r in rows)
    return {"conversations": n, "failures": f, "failure_rate": f / n if n else 0.0, "clusters": len(rows),
            "significant": sum(r["significant"] for r in rows)}


def _map(store: Store, max_points: int, projection: str, seed: int) -> list[dict]:
    """Up to `max_points` conversations (a seeded sample) projected to 2-D, with cluster and failure score."""
    from curation.embed import load_vectors, spaces

    with store.connect() as conn:
        assigned = conn.execute(
            sa.select(cluster_assignments.c.conversation_id, cluster_assignments.c.cluster_id,
                      failure_scores.c.failure_score)
            .select_from(cluster_assignments.outerjoin(
                failure_scores, failure_scores.c.conversation_id == cluster_assignments.c.conversation_id))
            .order_by(cluster_assignments.c.conversation_id)).all()
    if len(assigned) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(assigned), max_points, replace=False))
        assigned = [assigned[i] for i in keep]
    known = spaces(store)
    if not known or not assigned:
        return []
    ids, X = load_vectors(store, ids=[r[0] for r in assigned])
    if len(ids) < 3:
        return []
    if projection == "umap":
        try:
            import umap  # optional: a better map, at the cost of seconds
        except ImportError:
            raise CurateError("projection 'umap' needs umap-learn: pip install umap-learn") from None
        xy = umap.UMAP(n_components=2, random_state=seed, metric="cosine").fit_transform(X)
    else:
        xy = PCA(n_components=2, random_state=seed).fit_transform(X)
    by_id = {r[0]: r for r in assigned}
    return [{"id": cid, "x": float(x), "y": float(y), "cluster": by_id[cid][1], "failure": by_id[cid][2] or 0.0}
            for cid, (x, y) in zip(ids, xy)]


def cluster_trend(store: Store) -> dict:
    """{"runs": [run start times], "series": {cluster_id: [failure_rate or None per run]}, "sizes": {...}}."""
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(cluster_history.c.run_id, cluster_history.c.cluster_id, cluster_history.c.size,
                      cluster_history.c.failure_rate, runs.c.started_at)
            .select_from(cluster_history.join(runs, runs.c.id == cluster_history.c.run_id))
            .order_by(runs.c.started_at)).all()
    order = list(dict.fromkeys(r.run_id for r in rows))
    started = {r.run_id: r.started_at for r in rows}
    position = {run: i for i, run in enumerate(order)}
    series: dict[int, list] = {}
    sizes: dict[int, list] = {}
    for r in rows:
        series.setdefault(r.cluster_id, [None] * len(order))[position[r.run_id]] = r.failure_rate
        sizes.setdefault(r.cluster_id, [None] * len(order))[position[r.run_id]] = r.size
    return {"runs": [started[run] for run in order], "series": series, "sizes": sizes}
