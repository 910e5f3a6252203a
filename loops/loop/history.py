"""What the loop did: `curate loop status` and `curate loop history`."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from curation.store import Store, loads
from loops.loop.lock import holder_is_dead, plain
from loops.loop.tables import loop_locks, loop_runs, loop_steps

# the headline figure of each step: (step, figure key, name in the history row)
HEADLINES = [
    ("ingest", "ingested", "ingested"), ("cluster", "clusters", "clusters"), ("flag", "failure_rate", "failure_rate"),
    ("push", "pushed", "pushed"), ("pull", "responses", "ratings_pulled"), ("export", "pairs", "pairs_exported"),
    ("evaluate", "accuracy", "model_accuracy"), ("promote", "decision", "promotion"),
]


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = lambda t: dt.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ")
    return round((parse(end) - parse(start)).total_seconds(), 1)


def history(store: Store, loop: str | None = None, limit: int = 20) -> list[dict]:
    """Newest first: each run with its status, duration, steps and headline figures."""
    query = sa.select(loop_runs).order_by(loop_runs.c.started_at.desc()).limit(limit)
    if loop:
        query = query.where(loop_runs.c.loop == loop)
    with store.connect() as conn:
        runs = conn.execute(query).mappings().all()
        steps = conn.execute(sa.select(loop_steps).where(loop_steps.c.run_id.in_([r["id"] for r in runs]))
                             .order_by(loop_steps.c.position)).mappings().all()
    by_run: dict[str, list] = {}
    for s in steps:
        by_run.setdefault(s["run_id"], []).append(s)
    rows = []
    for run in runs:
        run_steps = {
            s["step"]: {"status": s["status"], "seconds": s["seconds"], "figures": loads(s["figures"]) or {},
                        **({"message": s["message"]} if s["message"] else {})}
            for s in by_run.get(run["id"], [])
        }
        headline = {name: (run_steps.get(step, {}).get("figures") or {}).get(key) for step, key, name in HEADLINES}
        rows.append({
            "run_id": run["id"], "loop": run["loop"], "status": run["status"], "started_at": run["started_at"],
            "finished_at": run["finished_at"], "seconds": _seconds(run["started_at"], run["finished_at"]),
            "attempts": run["attempts"], **headline, "steps": run_steps,
        })
    return rows


def status(store: Store, loop: str | None = None) -> dict:
    """The newest run (with its steps) and who holds the lock, if anyone; a lock whose process is gone (kill -9)
    is `stale`: the next `curate loop run` takes it over and resumes that run."""
    with store.connect() as conn:
        query = sa.select(loop_locks)
        if loop:
            query = query.where(loop_locks.c.loop == loop)
        locks = [plain(r) for r in conn.execute(query).mappings()]
    for lock in locks:
        lock["stale"] = holder_is_dead(lock)
    latest = history(store, loop, limit=1)
    return {"latest": latest[0] if latest else None, "running": locks}
