"""`score`: write the reward of every conversation's last assistant reply to `rewards`, incrementally.

Conversations are read in id order (keyset pages), so a run that stops part-way resumes where it left off, and
a conversation already scored by the same model version is never scored again.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tqdm.auto import tqdm

from curation.messages import split_last_reply
from curation.store import Store, dumps, insert_rows, loads, utcnow
from curation.store.failure_tables import rewards
from curation.store.tables import conversations


def score(store: Store, model: str | Path | None = None, batch_size: int | None = None, page: int = 2048,
          backend: str = "auto", progress: bool | None = None, engine: str | None = None,
          address: str | None = None) -> dict:
    """Score unscored conversations with `model` (a checkpoint folder; None = the registry's champion).

    `backend="onnx"` (ONNX Runtime, int8 weights) or `"openvino"` exports the model once (beside it) and scores
    faster on a CPU; `"auto"` (the default) is torch on a GPU and ONNX Runtime on a CPU when it is installed.
    `engine="ray"` scores on the Ray cluster at `address` (curation.engine): one worker per CPU or GPU, each loading
    the model once from its folder, which every worker must be able to read (a shared filesystem or the same path).
    Returns {"scored", "skipped" (no assistant reply), "model_version", "seconds", "per_second"} (+ "engine", "workers").
    """
    from curation.engine import resolve_engine
    from loops.registry import resolve_model

    chosen = resolve_engine(store, engine, address)
    version, path = resolve_model(store, model)
    job = _ScoreJob(str(path), version, batch_size, backend, "")
    if chosen.kind == "local":
        job.model()  # loaded before the run row, so that a model that does not load leaves no failed run behind
    with store.run("score", {"model_version": version, "path": str(path), "engine": chosen.kind}) as run:
        job.run_id = run.id
        started = time.perf_counter()
        with store.connect() as conn:
            todo = conn.execute(
                sa.select(sa.func.count()).select_from(conversations).where(~_scored(version))
            ).scalar_one()
        counts = {"scored": 0, "skipped": 0}
        run.progress = lambda: {"scored": counts.get("scored", 0)}
        if chosen.kind == "ray":
            from curation.engine import ray_pool

            counts = ray_pool.run(store, job, ~_scored(version), todo, page, chosen.address, "reward", progress)
        else:
            show = progress if progress is not None else sys.stderr.isatty()
            with tqdm(total=todo, disable=not show, desc="reward", unit="conv") as bar:
                last_id = ""
                while True:
                    with store.connect() as conn:
                        rows = conn.execute(
                            sa.select(conversations.c.id, conversations.c.messages)
                            .where(conversations.c.id > last_id, ~_scored(version))
                            .order_by(conversations.c.id).limit(page)
                        ).all()
                    if not rows:
                        break
                    last_id = rows[-1].id
                    _add(counts, job.score_rows(store, rows))
                    bar.update(len(rows))
        seconds = time.perf_counter() - started
        done = counts.get("scored", 0)
        summary = {"scored": done, "skipped": counts.get("skipped", 0), "model_version": version,
                   "seconds": round(seconds, 2), "per_second": round(done / seconds, 1) if seconds > 0 else None}
        if chosen.kind == "ray":
            summary.update(engine="ray", workers=counts["workers"])
        return run.finish(summary)


@dataclass
class _ScoreJob:
    """Scores pages of conversations and writes their rewards, one transaction per page: the local loop's body, and
    what each Ray worker runs on the chunks of ids it is given (the model loads once per process)."""

    path: str
    version: str
    batch_size: int | None
    backend: str
    run_id: str

    def model(self) -> Any:
        if getattr(self, "model_", None) is None:
            from loops.reward.model import RewardModel

            self.model_ = RewardModel(self.path, batch_size=self.batch_size, backend=self.backend)
        return self.model_

    def __call__(self, store: Store, ids: list[str]) -> dict:
        with store.connect() as conn:  # the ids still unscored: another run may have scored some meanwhile
            rows = conn.execute(sa.select(conversations.c.id, conversations.c.messages)
                                .where(conversations.c.id.in_(ids), ~_scored(self.version))
                                .order_by(conversations.c.id)).all()
        return self.score_rows(store, rows)

    def score_rows(self, store: Store, rows: list) -> dict:
        rm = self.model()
        units = [(r.id, split_last_reply(loads(r.messages))) for r in rows]
        ready = [(cid, u) for cid, u in units if u is not None]
        if ready:
            values, attrs = rm.score([u[0] for _, u in ready], [u[1] for _, u in ready], progress=False)
            now = utcnow()
            out = [{
                "conversation_id": cid, "model_version": self.version, "reward": float(values[i]),
                "attributes": dumps(dict(zip(rm.attributes, map(float, attrs[i])))) if attrs is not None else None,
                "scored_at": now, "run_id": self.run_id,
            } for i, (cid, _) in enumerate(ready)]
            with store.begin() as conn:  # one transaction per page: progress survives an interruption
                insert_rows(conn, rewards, out)
        return {"scored": len(ready), "skipped": len(units) - len(ready)}


def _add(totals: dict, counts: dict) -> None:
    for key, value in counts.items():
        totals[key] = totals.get(key, 0) + value


def _scored(version: str) -> sa.ColumnElement:
    return sa.exists().where(rewards.c.conversation_id == conversations.c.id, rewards.c.model_version == version)
