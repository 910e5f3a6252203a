"""`curate loop run`: the whole loop as a sequence of idempotent, recorded, resumable steps.

A run takes the loop's lock, then either resumes the newest unfinished run of this loop (a crash or `kill -9` left
it `running` or `failed`) from its first unfinished step, or starts a new one. Each step records its status, time
and figures in `loop_steps` as it ends, so a resumed run never redoes a finished step. Annotation steps that cannot
reach Argilla are marked skipped and the run ends `partial`.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
import uuid
from typing import Any, Callable

import sqlalchemy as sa

from curation.errors import CurateError
from curation.store import Store, dumps, loads, utcnow
from loops.loop.config import LoopConfig
from loops.loop.context import RunContext, Step, StepSkipped, makes_partial
from loops.loop.lock import LoopLock
from loops.loop.steps import STEPS
from loops.loop.tables import loop_runs, loop_steps

# exit codes for schedulers (documented in docs/operations.md)
EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_BUSY = 0, 1, 2, 3, 75
# a run whose step keeps failing is resumed this many times in all; then the next invocation starts afresh, so one
# persistent error cannot stop new data from flowing in forever (the failed run stays in the history)
MAX_ATTEMPTS = 3


def run_loop(store: Store, config: LoopConfig, steps: list[tuple[str, Step]] | None = None,
             progress: bool | None = None, on_step: Callable[[str, dict], None] | None = None) -> dict:
    """Run (or resume) the loop; returns {"run_id", "status", "resumed", "steps": {name: {...}}}.

    Raises LoopBusy when another run of the loop holds the lock. `on_step(name, record)` is told as each step ends.
    """
    steps = steps or STEPS
    lock = LoopLock(store, config.name, str(uuid.uuid4()))
    lock.acquire()
    try:
        run_id, resumed = _open_run(store, config, [name for name, _ in steps])
        lock.rename(run_id)
        ctx = RunContext(store, config, run_id, _started_at(store, run_id), progress,
                         previous=_previous_run(store, config.name, run_id))
        records = _step_records(store, run_id)
        status = "done"
        for name, fn in steps:
            record = records[name]
            if record["status"] in ("done", "skipped"):
                ctx.figures[name] = record["figures"] or {}
                status = "partial" if makes_partial(record) else status
                continue
            record = _run_step(ctx, name, fn)
            if on_step:
                on_step(name, record)
            if record["status"] == "failed":
                status = "failed"
                break
            if makes_partial(record):
                status = "partial"
        summary = _finish(store, run_id, status)
        return {"run_id": run_id, "status": status, "resumed": resumed, "loop": config.name, **summary}
    finally:
        lock.release()


def _open_run(store: Store, config: LoopConfig, names: list[str]) -> tuple[str, bool]:
    """The unfinished run to resume (we hold the lock, so its process is gone), else a new run with pending steps."""
    with store.begin() as conn:
        last = conn.execute(
            sa.select(loop_runs.c.id, loop_runs.c.status, loop_runs.c.attempts).where(loop_runs.c.loop == config.name)
            .order_by(loop_runs.c.started_at.desc()).limit(1)
        ).first()
        if last is not None and (last.status == "running" or (last.status == "failed" and last.attempts < MAX_ATTEMPTS)):
            conn.execute(loop_runs.update().where(loop_runs.c.id == last.id).values(
                status="running", pid=os.getpid(), host=socket.gethostname(), attempts=loop_runs.c.attempts + 1))
            return last.id, True
        run_id = str(uuid.uuid4())
        conn.execute(loop_runs.insert().values(
            id=run_id, loop=config.name, config=dumps(config.as_dict()), status="running", started_at=utcnow(),
            pid=os.getpid(), host=socket.gethostname(), attempts=1))
        conn.execute(loop_steps.insert(), [
            {"run_id": run_id, "step": name, "position": i, "status": "pending"} for i, name in enumerate(names)])
        return run_id, False


def _step_records(store: Store, run_id: str) -> dict[str, dict]:
    with store.connect() as conn:
        rows = conn.execute(sa.select(loop_steps).where(loop_steps.c.run_id == run_id)).mappings().all()
    return {r["step"]: {**r, "figures": loads(r["figures"]), "message": r["message"] or ""} for r in rows}


def _started_at(store: Store, run_id: str) -> str:
    with store.connect() as conn:
        return conn.execute(sa.select(loop_runs.c.started_at).where(loop_runs.c.id == run_id)).scalar_one()


def _previous_run(store: Store, loop: str, run_id: str) -> dict | None:
    with store.connect() as conn:
        row = conn.execute(
            sa.select(loop_runs).where(loop_runs.c.loop == loop, loop_runs.c.id != run_id,
                                       loop_runs.c.status.in_(("done", "partial")))
            .order_by(loop_runs.c.started_at.desc()).limit(1)
        ).mappings().first()
    return dict(row) if row else None


def _run_step(ctx: RunContext, name: str, fn: Step) -> dict:
    started, t0 = utcnow(), time.perf_counter()
    _update_step(ctx.store, ctx.run_id, name, status="running", started_at=started, message=None)
    status, figures, message = "done", {}, ""
    try:
        figures = fn(ctx) or {}
    except StepSkipped as skip:
        status, figures = "skipped", skip.figures
        message = ("unreachable: " if skip.unreachable else "") + str(skip)
    except CurateError as exc:
        status, message = "failed", str(exc)
    except Exception as exc:  # record the failure in the run before reporting it
        status, message = "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
    seconds = round(time.perf_counter() - t0, 3)
    _update_step(ctx.store, ctx.run_id, name, status=status, finished_at=utcnow(), seconds=seconds,
                 figures=dumps(figures), message=message or None)
    ctx.figures[name] = figures
    return {"status": status, "seconds": seconds, "figures": figures, "message": message}


def _update_step(store: Store, run_id: str, name: str, **values: Any) -> None:
    with store.begin() as conn:
        conn.execute(loop_steps.update().where(loop_steps.c.run_id == run_id, loop_steps.c.step == name).values(**values))


def _finish(store: Store, run_id: str, status: str) -> dict:
    records = _step_records(store, run_id)
    steps = {
        name: {"status": r["status"], "seconds": r["seconds"], "figures": r["figures"] or {}, **({"message": r["message"]} if r["message"] else {})}
        for name, r in sorted(records.items(), key=lambda kv: kv[1]["position"])
    }
    summary = {"steps": steps}
    with store.begin() as conn:
        conn.execute(loop_runs.update().where(loop_runs.c.id == run_id).values(
            status=status, finished_at=utcnow(), summary=dumps(summary)))
    return summary


def exit_code(status: str) -> int:
    return {"done": EXIT_DONE, "partial": EXIT_PARTIAL}.get(status, EXIT_FAILED)
