"""Columns that `curate export conversations` gains from this stage: cluster_id, cluster_label, failure_score,
signals and reward (of the newest reward model). Conversations without them get nulls (left joins).
A cluster's label is exported only when the cluster passes the privacy threshold (see rank.py)."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from curation.cluster.rank import MIN_USERS
from curation.store import loads
from curation.store.failure_tables import cluster_assignments, clusters, failure_scores, rewards
from curation.store.tables import conversations

COLUMNS = {"cluster_id": "int", "cluster_label": "string", "failure_score": "float", "signals": "json", "reward": "float"}


def failure_columns(conn: sa.Connection, ids: list[str], min_users: int = MIN_USERS) -> dict[str, dict[str, Any]]:
    private = conn.execute(
        sa.select(conversations.c.id).where(conversations.c.user_hash.is_not(None)).limit(1)).first() is not None
    newest = conn.execute(
        sa.select(rewards.c.model_version).order_by(rewards.c.scored_at.desc()).limit(1)).scalar_one_or_none()
    query = (
        sa.select(conversations.c.id, cluster_assignments.c.cluster_id, clusters.c.label, clusters.c.n_users,
                  failure_scores.c.failure_score, failure_scores.c.signals, rewards.c.reward)
        .select_from(
            conversations
            .outerjoin(cluster_assignments, cluster_assignments.c.conversation_id == conversations.c.id)
            .outerjoin(clusters, clusters.c.id == cluster_assignments.c.cluster_id)
            .outerjoin(failure_scores, failure_scores.c.conversation_id == conversations.c.id)
            .outerjoin(rewards, sa.and_(rewards.c.conversation_id == conversations.c.id,
                                        rewards.c.model_version == newest)))
        .where(conversations.c.id.in_(ids))
    )
    out = {}
    for cid, cluster_id, label, n_users, score, signals, reward in conn.execute(query):
        visible = not private or (n_users or 0) >= min_users
        out[cid] = {"cluster_id": cluster_id, "cluster_label": label if visible else None, "failure_score": score,
                    "signals": loads(signals), "reward": reward}
    return out
