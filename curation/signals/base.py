"""What a failure detector sees and what it returns.

A detector is any object with a `name`, a default `weight` and `__call__(conversation) -> Signal | None`.
They all share that one signature, so the scorer never branches on their type and users add their own
(see `docs/concepts-failures.md`). A positive weight marks evidence of failure; a negative weight marks evidence
of success (a thumbs up) that lowers the score.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from curation.messages import content_text, last_reply_index


@dataclass(frozen=True)
class Signal:
    """One detector's finding about one conversation: `value` is its strength in 0..1, `why` says what fired."""

    name: str
    value: float
    why: str


@dataclass
class ConversationView:
    """A conversation as detectors see it: the messages, the feedback events, and the reward when one is stored.

    `reward_pct` is the conversation's reward percentile (0 = the lowest) among all conversations the same reward
    model scored, so detectors need not know each model's scale.
    """

    id: str
    messages: list[dict]
    feedback: list[dict] = field(default_factory=list)  # {"type", "value", "turn", "at"}
    reward: float | None = None
    reward_pct: float | None = None
    judge: dict | None = None  # the newest judgement's attributes (curation.signals.judge), when the judge read it

    @property
    def reply_index(self) -> int | None:
        """Index of the rated response: the last assistant message."""
        return last_reply_index(self.messages)

    @property
    def reply(self) -> str:
        i = self.reply_index
        return "" if i is None else content_text(self.messages[i])

    @property
    def prompt(self) -> str:
        """The last user turn before the rated response."""
        end = self.reply_index if self.reply_index is not None else len(self.messages)
        for i in range(end - 1, -1, -1):
            if self.messages[i].get("role") == "user":
                return content_text(self.messages[i])
        return ""

    def user_turns(self) -> list[tuple[int, str]]:
        return [(i, content_text(m)) for i, m in enumerate(self.messages) if m.get("role") == "user"]

    def events(self, *types: str) -> list[dict]:
        return [e for e in self.feedback if e["type"] in types]


@runtime_checkable
class Detector(Protocol):
    name: str
    weight: float

    def __call__(self, conversation: ConversationView) -> Signal | None: ...


def short(text: Any, n: int = 60) -> str:
    """A quoted excerpt for a `why`."""
    text = " ".join(str(text).split())
    return repr(text if len(text) <= n else text[: n - 1] + "…")
