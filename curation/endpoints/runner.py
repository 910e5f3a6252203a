"""Running many endpoint requests at once: bounded submission, per-endpoint stop rules, and the run's counts.

Shared by generate and the judge, so that both stop, cap and count the same way: at most `concurrency` jobs are in
flight (a stopped endpoint or a reached cap ends the run quickly), an endpoint whose answers fail `stop_after` times
in a row, or fail fatally (auth, URL, model), is no longer called in that run.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, TypeVar

from tqdm import tqdm

from curation.endpoints.client import Budget, Capped

J = TypeVar("J")


class RunState:
    """Counts, per-endpoint failure streaks and first errors; touched by the workers and the main thread.

    `record(key, outcome)` takes what a job returned: an exception (failed, or `Capped`) or anything else (done).
    """

    def __init__(self, stop_after: int, budget: Budget):
        self.stop_after = stop_after
        self.budget = budget
        self.done = self.failed = self.capped = 0
        self.streak: dict[str, int] = {}
        self.halted: set[str] = set()
        self.errors: dict[str, str] = {}
        self.lock = threading.Lock()

    def stopped(self, key: str) -> bool:
        with self.lock:
            return key in self.halted

    def record(self, key: str, outcome: Any) -> Any:
        """`outcome` when it is a result, else None (after counting the failure or the cap)."""
        with self.lock:
            if not isinstance(outcome, BaseException):
                self.done += 1
                self.streak[key] = 0
                return outcome
            if isinstance(outcome, Capped):
                self.capped += 1
                return None
            self.failed += 1
            if key not in self.halted:
                self.errors.setdefault(key, str(outcome))
                self.streak[key] = self.streak.get(key, 0) + 1
                if getattr(outcome, "fatal", False) or self.streak[key] >= self.stop_after:
                    self.halted.add(key)
                    self.errors[key] = f"{outcome}; stopped calling it"
            return None

    def summary(self, done_name: str) -> dict:
        with self.lock:
            return {done_name: self.done, "failed": self.failed, "requests": self.budget.requests,
                    "tokens": self.budget.tokens, "capped": self.capped, "cap": self.budget.capped,
                    "errors": dict(self.errors)}


def run_bounded(jobs: Iterable[J], work: Callable[[J], Any], done: Callable[[J, Any], None], concurrency: int,
                tick: Callable[[], None], tick_s: float = 0.5, name: str = "curate") -> None:
    """Run `work(job)` in `concurrency` threads, at most that many submitted at a time; `done(job, result)` and
    `tick()` (at least every `tick_s`) run in this thread. `work` must not raise."""
    queue = iter(jobs)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=name)
    try:
        running: dict[Future, J] = {}
        for job in queue:
            running[pool.submit(work, job)] = job
            if len(running) >= concurrency:
                break
        while running:
            finished, _ = wait(running, timeout=tick_s, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                done(job, future.result())
                nxt = next(queue, None)
                if nxt is not None:
                    running[pool.submit(work, nxt)] = nxt
            tick()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def run_batched(jobs: list[J], work: Callable[[J], Any], keep: Callable[[J, Any], dict | None],
                write: Callable[[list[dict]], None], concurrency: int, *, flush_rows: int, flush_s: float, name: str,
                unit: str, progress: bool | None) -> None:
    """`run_bounded` that turns each result into a row (`keep`: the row, or None) and writes the rows in batches of
    `flush_rows` or every `flush_s` seconds, and whatever is left when the run ends, however it ends: a kill loses
    at most one batch."""
    pending: list[dict] = []
    last_flush = time.monotonic()
    bar = tqdm(total=len(jobs), unit=unit, desc=name, disable=None if progress is None else not progress)

    def done(job: J, outcome: Any) -> None:
        row = keep(job, outcome)
        if row is not None:
            pending.append(row)
        bar.update(1)

    def tick() -> None:
        nonlocal last_flush
        if pending and (len(pending) >= flush_rows or time.monotonic() - last_flush >= flush_s):
            write(pending)
            pending.clear()
            last_flush = time.monotonic()

    try:
        run_bounded(jobs, work, done, concurrency, tick, flush_s, f"curate-{name}")
    finally:
        bar.close()
        if pending:
            write(pending)  # what was done is kept, whatever stopped the run


def notes(summary: dict) -> list[str]:
    """Lines under a run's one-line summary: each endpoint's first error, and the cap that stopped it."""
    lines = [f"  {k}: {v}" for k, v in summary["errors"].items()]
    if summary.get("cap"):
        lines.append(f"  stopped at the per-run {summary['cap']} cap")
    return lines
