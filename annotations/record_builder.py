"""Argilla record payloads: what annotators see for a pick (redacted context, response, a generated B in a random
order, metadata, the "find similar" vector and suggestions from the judge or the reward model), built as plain dicts.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa

from annotations.order import shown_swapped
from annotations.pii import Redactor
from annotations.routing import Pick, cluster_labels
from annotations.suggestions import Suggestions
from annotations.template import VECTOR
from curation.messages import content_text, last_reply_index
from curation.store import Store, loads
from curation.store.failure_tables import cluster_assignments, failure_scores
from curation.store.tables import GENERATED, conversations


def record_id(conversation_id: str, conversation_id_b: str | None = None) -> str:
    """The Argilla external id of a record: the conversation id, or both ids for a two-response record."""
    return conversation_id if conversation_id_b is None else f"{conversation_id}|{conversation_id_b}"


class RecordBuilder:
    """Turns picks into Argilla record payloads (plain dicts; the SDK's objects cost more than the server's work)."""

    def __init__(self, store: Store, redactor: Redactor, question_ids: dict[str, str], space: str | None,
                 suggestions: Suggestions | None = None, ab_seed: int = 0):
        self.store = store
        self.ab_seed = ab_seed
        self.redactor = redactor
        self.question_ids = question_ids
        self.space = space
        self.labels = cluster_labels(store)
        self.suggestions = suggestions or Suggestions(store, question_ids)

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
        self.suggestions.load(ids)
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
        suggestions = self.suggestions.for_conversation(shown_a)
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


def _fired(signal: Any) -> bool:
    return isinstance(signal, dict) and bool(signal.get("name")) and (signal.get("value") or 0) > 0
