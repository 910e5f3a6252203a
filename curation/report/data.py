"""What the report shows, gathered from the store: a 2-D map, the ranked clusters, and each cluster's history."""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sklearn.decomposition import PCA

from curation.cluster.rank import MIN_USERS, rank_clusters
from curation.errors import CurateError
from curation.store import Store
from curation.store.failure_tables import cluster_assignments, cluster_history, failure_scores
from curation.store.tables import runs


def gather(store: Store, top: int = 20, max_points: int = 5_000, projection: str = "pca", seed: int = 0,
           min_users: int = MIN_USERS) -> dict:
    rows = rank_clusters(store, min_users=min_users)
    if not rows:
        raise CurateError("nothing to report yet; run `curate embed` and `curate cluster` first")
    return {"clusters": rows, "top": rows[:top], "points": _map(store, max_points, projection, seed),
            "history": cluster_trend(store), "totals": _totals(rows)}


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
