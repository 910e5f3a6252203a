"""What clustering reads from and writes to the store: active clusters, assignments, the label texts of each
cluster, the clusters themselves and their history."""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from curation.cluster.rank import distinct_users, prompt_of, wilson
from curation.messages import content_text
from curation.store import Store, dumps, loads, stored_messages, utcnow
from curation.store.failure_tables import cluster_assignments, cluster_history, clusters

WRITE_CHUNK = 50_000
LABEL_DOCS = 60  # texts per cluster for keywords: the most central half, a seeded random half
N_EXAMPLES = 10


def insert_assignments(conn, ids, cluster_id, sim, novel, run_id) -> None:
    """Plain tuples through the driver's executemany: compiling 10M parameter dicts costs more than the insert."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    novels = novel.astype(int).tolist() if novel is not None else [0] * len(ids)
    conn.exec_driver_sql(
        f"INSERT INTO cluster_assignments (conversation_id, cluster_id, similarity, run_id, novel) VALUES "
        f"({', '.join([mark] * 5)})", list(zip(ids, cluster_id.tolist(), sim.tolist(), [run_id] * len(ids), novels)))


def active_clusters(store: Store) -> dict:
    with store.connect() as conn:
        rows = conn.execute(sa.select(clusters.c.id, clusters.c.centroid, clusters.c.radius, clusters.c.space)
                            .where(clusters.c.retired_run_id.is_(None)).order_by(clusters.c.id)).all()
    if not rows:
        return {"ids": [], "centroids": None, "radius": None, "dim": None, "space": set()}
    C = np.stack([np.frombuffer(r.centroid, dtype="<f4") for r in rows])
    return {"ids": [r.id for r in rows], "centroids": C, "radius": np.array([r.radius for r in rows], dtype=np.float32),
            "dim": C.shape[1], "space": {r.space for r in rows}}


def assignments(store: Store) -> dict[str, tuple[int, float, int]]:
    with store.connect() as conn:
        return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(sa.select(
            cluster_assignments.c.conversation_id, cluster_assignments.c.cluster_id,
            cluster_assignments.c.similarity, cluster_assignments.c.novel))}


def write_assignments(store, ids, cluster_id, sim, novel, previous, run_id, refitted) -> int:
    """Write only rows that changed, a chunk at a time (a million row dicts at once would cost gigabytes)."""
    changed = [i for i, cid in enumerate(ids)
               if refitted or (kept := previous.get(cid)) is None or kept[0] != cluster_id[i]]
    with store.begin() as conn:
        if refitted:
            conn.execute(cluster_assignments.delete())
        else:
            stale = [ids[i] for i in changed if ids[i] in previous]
            for start in range(0, len(stale), 5_000):
                conn.execute(cluster_assignments.delete().where(
                    cluster_assignments.c.conversation_id.in_(stale[start : start + 5_000])))
        # plain Python numbers once, not a numpy scalar per field per row (a third of the write time at 50k rows)
        cluster_ids, sims, novels = cluster_id.tolist(), sim.tolist(), novel.astype(int).tolist()
        for start in range(0, len(changed), WRITE_CHUNK):
            conn.execute(cluster_assignments.insert(), [
                {"conversation_id": ids[i], "cluster_id": cluster_ids[i], "similarity": sims[i],
                 "run_id": run_id, "novel": novels[i]} for i in changed[start : start + WRITE_CHUNK]])
    return len(changed)


def label_texts(store, ids, index, sim, k, seed):
    """Per cluster: texts of its most central and some random members (for keywords), and its central example ids."""
    rng = np.random.default_rng(seed)
    order = np.lexsort((-sim, index))  # by cluster, most central first
    bounds = np.searchsorted(index[order], np.arange(k + 1))
    wanted: dict[int, list[str]] = {}
    examples: dict[int, list[str]] = {}
    for c in range(k):
        members = order[bounds[c] : bounds[c + 1]]
        half = LABEL_DOCS // 2
        picked = list(members[:half])
        if len(members) > half:
            picked += list(rng.choice(members[half:], size=min(half, len(members) - half), replace=False))
        wanted[c] = [ids[i] for i in picked]
        examples[c] = [ids[i] for i in members[:N_EXAMPLES]]
    text_of_id = user_texts(store, [cid for group in wanted.values() for cid in group])
    return {c: [text_of_id[i] for i in group if i in text_of_id] for c, group in wanted.items()}, examples


def user_texts(store: Store, ids: list[str]) -> dict[str, str]:
    """What a conversation is about, for keywords: its user turns (the replies would add the model's own words)."""
    out = {}
    with store.connect() as conn:
        for cid, messages in stored_messages(conn, ids):
            messages = loads(messages)
            out[cid] = " ".join(content_text(m) for m in messages if m.get("role") == "user") or prompt_of(messages)
    return out


def write_clusters(store, ids_of, centroids, member_radii, sizes, labels, examples, space, run_id, old):
    users = distinct_users(store)
    existing = set(all_cluster_ids(store))
    kept = set(ids_of)
    with store.begin() as conn:
        for c, cid in enumerate(ids_of):
            label, keywords = labels.get(cid, (None, []))
            values = {"label": label, "keywords": dumps(keywords), "examples": dumps(examples.get(c, [])),
                      "centroid": centroids[c].astype("<f4").tobytes(), "space": space,
                      "radius": float(member_radii[c]), "size": int(sizes[c]), "n_users": users.get(cid, 0),
                      "updated_run_id": run_id, "retired_run_id": None if sizes[c] else run_id}
            if cid in existing:
                conn.execute(clusters.update().where(clusters.c.id == cid).values(**values))
            else:
                conn.execute(clusters.insert().values(id=cid, created_run_id=run_id, **values))
        retired = [cid for cid in old["ids"] if cid not in kept]
        if retired:
            conn.execute(clusters.update().where(clusters.c.id.in_(retired)).values(retired_run_id=run_id, size=0))


def all_cluster_ids(store: Store) -> list[int]:
    with store.connect() as conn:
        return list(conn.execute(sa.select(clusters.c.id)).scalars())


def write_history(store: Store, run_id: str, threshold: float) -> None:
    from curation.cluster.rank import cluster_stats

    stats = cluster_stats(store, threshold)
    if not stats:
        return
    ids = sorted(stats)
    n = np.array([stats[c][0] for c in ids])
    f = np.array([stats[c][1] for c in ids])
    low, high = wilson(f, n)
    at = utcnow()
    with store.begin() as conn:
        conn.execute(cluster_history.insert(), [
            {"run_id": run_id, "cluster_id": int(c), "size": int(n[i]), "failures": int(f[i]),
             "failure_rate": float(f[i] / n[i]), "ci_low": float(low[i]), "ci_high": float(high[i]),
             "novel": int(stats[c][2]), "at": at} for i, c in enumerate(ids)])
