"""`score`: write the reward of every conversation's last assistant reply to `rewards`, incrementally.

Conversations are read in id order (keyset pages), so a run that stops part-way resumes where it left off, and
a conversation already scored by the same model version is never scored again.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import sqlalchemy as sa
from tqdm.auto import tqdm

from curation.store import Store, dumps, insert_rows, loads, utcnow
from curation.store.failure_tables import rewards
from curation.store.tables import conversations


def split_last_reply(messages: list[dict]) -> tuple[list[dict], dict] | None:
    """(context, last assistant message), the unit every stage rates and scores; None without a reply."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            return messages[:i], messages[i]
    return None


def score(store: Store, model: str | Path | None = None, batch_size: int | None = None, page: int = 2048,
          backend: str = "auto", progress: bool | None = None) -> dict:
    """Score unscored conversations with `model` (a checkpoint folder; None = the registry's champion).

    `backend="onnx"` (ONNX Runtime, int8 weights) or `"openvino"` exports the model once (beside it) and scores
    faster on a CPU; `"auto"` (the default) is torch on a GPU and ONNX Runtime on a CPU when it is installed.
    Returns {"scored", "skipped" (no assistant reply), "model_version", "seconds", "per_second"}.
    """
    from loops.registry import resolve_model
    from loops.reward.model import RewardModel

    version, path = resolve_model(store, model)
    rm = RewardModel(path, batch_size=batch_size, backend=backend)
    run_id = store.start_run("score", {"model_version": version, "path": str(path)})
    started = time.perf_counter()
    done = skipped = 0
    with store.connect() as conn:
        todo = conn.execute(
            sa.select(sa.func.count()).select_from(conversations).where(~_scored(version))
        ).scalar_one()
    show = progress if progress is not None else sys.stderr.isatty()
    bar = tqdm(total=todo, disable=not show, desc="reward", unit="conv")
    last_id = ""
    try:
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
            units = [(r.id, split_last_reply(loads(r.messages))) for r in rows]
            ready = [(cid, u) for cid, u in units if u is not None]
            skipped += len(units) - len(ready)
            if ready:
                values, attrs = rm.score([u[0] for _, u in ready], [u[1] for _, u in ready], progress=False)
                now = utcnow()
                out = [{
                    "conversation_id": cid, "model_version": version, "reward": float(values[i]),
                    "attributes": dumps(dict(zip(rm.attributes, map(float, attrs[i])))) if attrs is not None else None,
                    "scored_at": now, "run_id": run_id,
                } for i, (cid, _) in enumerate(ready)]
                with store.begin() as conn:  # one transaction per page: progress survives an interruption
                    insert_rows(conn, rewards, out)
                done += len(out)
            bar.update(len(units))
    except BaseException:
        store.finish_run(run_id, "failed", {"scored": done})
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    summary = {"scored": done, "skipped": skipped, "model_version": version, "seconds": round(seconds, 2),
               "per_second": round(done / seconds, 1) if seconds > 0 else None}
    store.finish_run(run_id, "done", summary)
    return summary


def _scored(version: str) -> sa.ColumnElement:
    return sa.exists().where(rewards.c.conversation_id == conversations.c.id, rewards.c.model_version == version)
