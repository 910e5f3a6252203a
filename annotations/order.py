"""Which response of a two-response record annotators saw first.

A record pairs a routed production reply (`conversation_id`) with a sibling (`conversation_id_b`). When the sibling is
a generated candidate, annotators must not be able to tell the production reply by its place, so push shows the
two in a random order per record: `shown_swapped(record_id, seed)` with the push run's `ab_seed`, stored in that
run's parameters. Ratings are stored as given (a preference below 0 and a rewrite are about the response shown as
A); `swapped_records` gives exports what they need to undo the order.
"""
from __future__ import annotations

import hashlib

import sqlalchemy as sa

from annotations.tables import annotation_records
from curation.store import loads
from curation.store.tables import GENERATED, conversations, runs


def shown_swapped(record_id: str, seed: int) -> bool:
    """True when the record shows its second conversation's reply as response A (half of the records, at random)."""
    return hashlib.sha256(f"{seed}:{record_id}".encode()).digest()[0] & 1 == 1


def swapped_records(conn: sa.Connection, dataset: str | None = None) -> set[str]:
    """Ids of the records shown with the second conversation's reply as response A."""
    a, c = annotation_records.c, conversations.c
    query = (sa.select(a.record_id, runs.c.params)
             .select_from(annotation_records.join(conversations, c.id == a.conversation_id_b)
                          .join(runs, runs.c.id == a.run_id))
             .where(c.source == GENERATED))
    if dataset is not None:
        query = query.where(a.dataset == dataset)
    out = set()
    for record_id, params in conn.execute(query):
        seed = (loads(params) or {}).get("ab_seed")
        if seed is not None and shown_swapped(record_id, seed):
            out.add(record_id)
    return out
