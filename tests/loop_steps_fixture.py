"""Tiny loop steps for testing the runner itself: each appends its name to $LOOP_LOG, `slow` waits for a file."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from loops.loop.context import StepSkipped


def _note(name: str) -> dict:
    with open(os.environ["LOOP_LOG"], "a") as log:
        log.write(name + "\n")
    return {"step": name}


def first(ctx):
    return _note("first")


def slow(ctx):
    _note("slow-start")
    gate = Path(os.environ["LOOP_GATE"])
    while not gate.exists():
        time.sleep(0.05)
    return _note("slow")


def flaky(ctx):
    if Path(os.environ["LOOP_FAIL"]).exists():
        raise RuntimeError("flaky step failed on purpose")
    return _note("flaky")


def unreachable(ctx):
    raise StepSkipped("cannot reach http://127.0.0.1:9 after retries", unreachable=True)


def last(ctx):
    return _note("last")


STEPS = [("first", first), ("slow", slow), ("flaky", flaky), ("last", last)]

if __name__ == "__main__":  # run the loop with these steps, as a scheduler's process would
    from curation.store import Store
    from loops.loop.config import LoopConfig
    from loops.loop.runner import run_loop

    result = run_loop(Store.open(sys.argv[1]), LoopConfig(), steps=STEPS)
    print(result["status"])
