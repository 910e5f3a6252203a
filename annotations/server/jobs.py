"""Run argilla-server's background jobs (rq, normally on Redis) as tasks on the server's own event loop.

argilla-server decorates its jobs with `rq.decorators.job(QUEUE)` at import time and calls `.delay(...)`, which
only needs `queue.enqueue_call`. `install()` swaps the queues in `argilla_server.jobs.queues` for these before
the job modules are imported, so a distribution change or a webhook runs in-process and Redis is never contacted.
Importing `argilla_server` builds the whole app (and binds the job decorators), so the queues module is put in
`sys.modules` before `argilla_server` is imported at all.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import types
import uuid
from typing import Any, Callable

_LOGGER = logging.getLogger("curate.argilla.jobs")
_TASKS: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones


class InProcessJob:
    """What callers of `.delay()` read back: an id and a status."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.status = "queued"

    def get_status(self) -> str:
        return self.status


class InProcessQueue:
    def __init__(self, name: str):
        self.name = name

    def enqueue_call(self, func: Callable, args: tuple | None = None, kwargs: dict | None = None, retry: Any = None, **_: Any) -> InProcessJob:
        job = InProcessJob()
        attempts = 1 + (getattr(retry, "max", 0) or 0)
        task = asyncio.get_running_loop().create_task(self._run(job, func, args or (), kwargs or {}, attempts))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return job

    async def _run(self, job: InProcessJob, func: Callable, args: tuple, kwargs: dict, attempts: int) -> None:
        job.status = "started"
        for attempt in range(1, attempts + 1):
            try:
                result = func(*args, **kwargs)
                if inspect.isawaitable(result):
                    await result
                job.status = "finished"
                return
            except Exception:  # a job's failure must not take the server down; log it like rq's worker would
                _LOGGER.exception("job %s (%s) failed, attempt %d of %d", func.__name__, self.name, attempt, attempts)
                await asyncio.sleep(min(2**attempt, 10))
        job.status = "failed"


class _NoRedis:
    """Stands in for the Redis connection that argilla-server pings at startup."""

    def ping(self) -> bool:
        return True


def install() -> None:
    """Must run before the first `import argilla_server`."""
    name = "argilla_server.jobs.queues"
    if name in sys.modules and isinstance(getattr(sys.modules[name], "DEFAULT_QUEUE", None), InProcessQueue):
        return
    if "argilla_server" in sys.modules:
        raise RuntimeError("argilla_server was imported before the in-process job queues were installed")
    queues = types.ModuleType(name, "argilla-server's job queues, served in-process by Curate")
    queues.REDIS_CONNECTION = _NoRedis()
    queues.DEFAULT_QUEUE = InProcessQueue("default")
    queues.HIGH_QUEUE = InProcessQueue("high")
    queues.JOB_TIMEOUT_DISABLED = -1
    sys.modules[name] = queues
