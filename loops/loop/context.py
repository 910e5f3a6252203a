"""What a loop step is given (`RunContext`) and how it says it had nothing to do (`StepSkipped`).

The runner and the steps both import this module; neither imports the other's internals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from curation.store import Store
from loops.loop.config import LoopConfig


def makes_partial(record: dict) -> bool:
    """Whether a step's record makes its run `partial`: skipped because a service was unreachable, or done with a
    "partial" figure (e.g. push, when some generated candidates failed)."""
    if record.get("status") == "skipped":
        return (record.get("message") or "").startswith("unreachable")
    return record.get("status") == "done" and bool((record.get("figures") or {}).get("partial"))


class StepSkipped(Exception):
    """A step had nothing to do, or could not reach an optional service; `unreachable` makes the run partial."""

    def __init__(self, reason: str, figures: dict | None = None, unreachable: bool = False):
        super().__init__(reason)
        self.figures = figures or {}
        self.unreachable = unreachable


@dataclass
class RunContext:
    store: Store
    config: LoopConfig
    run_id: str
    started_at: str = ""
    progress: bool | None = None
    figures: dict[str, dict] = field(default_factory=dict)  # finished steps of this run, by name
    previous: dict | None = None  # the newest finished run of this loop before this one

    def path(self, *parts: str) -> str:
        folder = self.store.home.joinpath(*parts)
        folder.parent.mkdir(parents=True, exist_ok=True)
        return str(folder)


Step = Callable[[RunContext], dict]
