"""Argilla record payloads: what annotators see for a pick (redacted context, response, a generated B in a random
order, metadata, the "find similar" vector and the reward model's suggestions), built as plain dicts.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import sqlalchemy as sa

from annotations.order import shown_swapped
from annotations.pii import Redactor
from annotations.routing import Pick, cluster_labels
from annotations.template import ATTRIBUTES, VECTOR
from curation.messages import content_text, last_reply_index
from curation.store import Store, loads
from curation.store.failure_tables import cluster_assignments, failure_scores, rewards
from curation.store.tables import GENERATED, conversations

_AGENT_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_:./ ]")


def record_id(conversation_id: str, conversation_id_b: str | None = None) -> str:
    """The Argilla external id of a record: the conversation id, or both ids for a two-response record."""
    return conversation_id if conversation_id_b is None else f"{conversation_id}|{conversation_id_b}"


class RecordBuilder:
    """Turns picks into Argilla record payloads (plain dicts; the SDK's objects cost more than the server's work)."""

    def __init__(self, store: Store, redactor: Redactor, question_ids: dict[str, str], space: str | None,
                 model_version: str | None = None, ab_seed: int = 0):
        self.store = store
        self.ab_seed = ab_seed
        self.redactor = redactor
        self.question_ids = question_ids
        self.space = space
        self.labels = cluster_labels(store)
        self.model_version = model_version or _suggestion_model(store)
        self.agent = _AGENT_UNSAFE.sub("-", self.model_version)[:200] if self.model_version else None

    def build(self, picks: list[Pick]) -> tuple[list[dict], list[Pick]]:
        ids = [p.conversation_id for p in picks] + [p.conversation_id_b for p in picks if p.conversation_id_b]
        rows = self._rows(ids)
        vectors = self._vectors(ids)
        items, sent = [], []
        for pick in picks:
            row = rows.get(pick.conversation_id)
            row_b = rows.get(pick.conversation_id_b) if pick.conversation_id_b else None
            item = self._item(pick, row, row_b, vectors.get(pick.conversation_id)) if row is not None else None
            if item is not None:
                items.append(item)
                sent.append(pick)
        return items, sent

    def _rows(self, ids: list[str]) -> dict[str, Any]:
        c, f, a = conversations.c, failure_scores.c, cluster_assignments.c
        query = (
            sa.select(c.id, c.messages, c.model, c.created_at, c.source, f.failure_score, f.signals, a.cluster_id)
            .select_from(conversations.outerjoin(failure_scores, f.conversation_id == c.id)
                         .outerjoin(cluster_assignments, a.conversation_id == c.id))
            .where(c.id.in_(ids))
        )
        found: dict[str, Any] = {}
        with self.store.connect() as conn:
            found.update((r.id, r) for r in conn.execute(query))
            if self.model_version is not None:
                found_rewards = dict(conn.execute(
                    sa.select(rewards.c.conversation_id, rewards.c.attributes)
                    .where(rewards.c.model_version == self.model_version, rewards.c.conversation_id.in_(ids))
                ).all())
            else:
                found_rewards = {}
        self.rewards = found_rewards
        return found

    def _vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        if self.space is None:
            return {}
        from curation.embed import load_vectors

        found, matrix = load_vectors(self.store, self.space, ids)
        return dict(zip(found, matrix))

    def _item(self, pick: Pick, row: Any, row_b: Any, vector: np.ndarray | None) -> dict | None:
        messages = loads(row.messages) or []
        last = last_reply_index(messages)
        if last is None:
            return None
        redact = self.redactor.redact
        context = [{"role": str(m.get("role", "user")), "content": redact(content_text(m)) or " "} for m in messages[:last]]
        fields = {"conversation": context, "response": redact(content_text(messages[last])) or "(empty response)"}
        external_id = record_id(pick.conversation_id, pick.conversation_id_b)
        generated_b = row_b is not None and row_b.source == GENERATED
        shown_a = pick.conversation_id
        if row_b is not None:
            messages_b = loads(row_b.messages) or []
            last_b = last_reply_index(messages_b)
            fields["response_b"] = redact(content_text(messages_b[last_b])) if last_b is not None else "(no response)"
            if generated_b and shown_swapped(external_id, self.ab_seed):
                fields["response"], fields["response_b"] = fields["response_b"], fields["response"]
                shown_a = pick.conversation_id_b
        item: dict[str, Any] = {
            "external_id": external_id,
            "fields": fields,
            "metadata": self._metadata(pick, row, hide_origin=generated_b),
        }
        if vector is not None:
            item["vectors"] = {VECTOR: vector}
        suggestions = self._suggestions(shown_a)
        if suggestions:
            item["suggestions"] = suggestions
        return item

    def _metadata(self, pick: Pick, row: Any, hide_origin: bool = False) -> dict:
        """The record's metadata; with `hide_origin` (B is generated), nothing that tells the production reply apart."""
        meta: dict[str, Any] = {"strategy": pick.strategy}
        if row.failure_score is not None:
            meta["failure_score"] = min(1.0, max(0.0, float(row.failure_score)))
        if row.cluster_id is not None:
            meta["cluster_id"] = int(row.cluster_id)
            if self.labels.get(row.cluster_id):
                meta["cluster_label"] = self.labels[row.cluster_id][:200]
        if row.created_at:
            meta["date"] = row.created_at[:10]
        if hide_origin:  # the production reply's signals and model name would say which response it is
            return meta
        fired = [s["name"] for s in (loads(row.signals) or []) if _fired(s)]
        if fired:
            meta["signals"] = fired
        if row.model:
            meta["model"] = row.model[:200]
        return meta

    def _suggestions(self, conversation_id: str) -> list[dict]:
        attributes = loads(self.rewards.get(conversation_id)) if self.rewards else None
        if not isinstance(attributes, dict):
            return []
        out = []
        for name in ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, (int, float)) and name in self.question_ids and np.isfinite(value):
                out.append({"question_id": self.question_ids[name], "value": int(min(4, max(0, round(value)))),
                            "agent": self.agent})
        return out


def _fired(signal: Any) -> bool:
    return isinstance(signal, dict) and bool(signal.get("name")) and (signal.get("value") or 0) > 0


def _suggestion_model(store: Store) -> str | None:
    """The reward model whose attribute predictions become suggestions: the newest version that wrote rewards."""
    with store.connect() as conn:
        return conn.execute(
            sa.select(rewards.c.model_version).where(rewards.c.attributes.is_not(None))
            .order_by(rewards.c.scored_at.desc()).limit(1)
        ).scalar()
