"""Where a pushed record's suggestions come from: the LLM judge, the reward model's attribute heads, or nowhere.

`--suggestions judge` (the default) pre-fills the five HelpSteer2 questions with the judge's ratings where the
conversation has a judgement (agent = "judge:MODEL:rubric-VERSION"; Argilla's agent pattern refuses "@"), else with the reward model's as before; `reward`
uses the reward model only; `none` sends no suggestions. A judge suggestion's `score` is the rating scaled to 0–1:
the judge reports no confidence of its own, and Argilla asks scores in that range.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import sqlalchemy as sa

from curation.errors import CurateError
from curation.judge import ATTRIBUTES, latest_judgements
from curation.store import Store, loads
from curation.store.failure_tables import rewards

MODES = ("judge", "reward", "none")
_AGENT_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_:./ ]")  # what argilla-server's AGENT_REGEX accepts


def agent_name(name: str) -> str:
    return _AGENT_UNSAFE.sub("-", name)[:200]


class Suggestions:
    """`Suggestions(store, question_ids, mode, reward_version).load(ids)`, then `for_conversation(id)` gives the
    Argilla suggestion payloads of one record's response."""

    def __init__(self, store: Store, question_ids: dict[str, str], mode: str = "judge", reward_version: str | None = None):
        if mode not in MODES:
            raise CurateError(f"--suggestions must be one of {', '.join(MODES)}, not {mode!r}")
        self.store = store
        self.question_ids = question_ids
        self.mode = mode
        self.reward_version = (reward_version or newest_reward_model(store)) if mode != "none" else None
        self.reward_agent = agent_name(self.reward_version) if self.reward_version else None
        self.rewards: dict[str, Any] = {}
        self.judged: dict[str, dict] = {}

    def load(self, ids: list[str]) -> None:
        if self.mode == "none" or not ids:
            return
        with self.store.connect() as conn:
            if self.mode == "judge":
                self.judged = latest_judgements(conn, ids)
            if self.reward_version is not None:
                self.rewards = dict(conn.execute(
                    sa.select(rewards.c.conversation_id, rewards.c.attributes)
                    .where(rewards.c.model_version == self.reward_version, rewards.c.conversation_id.in_(ids))).all())

    def for_conversation(self, conversation_id: str) -> list[dict]:
        judged = self.judged.get(conversation_id)
        if judged is not None:
            agent = agent_name(f"judge:{judged['model']}:rubric-{judged['rubric_version']}")
            return [{"question_id": self.question_ids[a], "value": int(judged[a]), "agent": agent,
                     "score": round(int(judged[a]) / 4, 4)}
                    for a in ATTRIBUTES if a in self.question_ids and judged.get(a) is not None]
        attributes = loads(self.rewards.get(conversation_id)) if self.rewards else None
        if not isinstance(attributes, dict):
            return []
        out = []
        for name in ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, (int, float)) and name in self.question_ids and np.isfinite(value):
                out.append({"question_id": self.question_ids[name], "value": int(min(4, max(0, round(value)))),
                            "agent": self.reward_agent})
        return out


def newest_reward_model(store: Store) -> str | None:
    """The reward model whose attribute predictions become suggestions: the newest version that wrote rewards."""
    with store.connect() as conn:
        return conn.execute(
            sa.select(rewards.c.model_version).where(rewards.c.attributes.is_not(None))
            .order_by(rewards.c.scored_at.desc()).limit(1)
        ).scalar()
