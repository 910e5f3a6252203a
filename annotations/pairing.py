"""Pairing: give a routed conversation a sibling reply (same context, another answer) as its response B."""
from __future__ import annotations

import sqlalchemy as sa

from annotations.routing import Pick, load_candidates
from annotations.tables import annotation_records
from curation.messages import context_key
from curation.store import Store, loads
from curation.store.tables import GENERATED, conversations


def pair_siblings(store: Store, dataset: str, picks: list[Pick], generated: bool = True) -> list[Pick]:
    """Give each pick a sibling reply (same context, not routed anywhere, not picked) as its response B, if it has one.

    A production sibling comes before a generated candidate (those count only with `generated`); among them the
    smallest id is taken, so the pairing is the same on every run.
    """
    with store.connect() as conn:
        routed = set(conn.execute(sa.select(annotation_records.c.conversation_id)
                                  .where(annotation_records.c.dataset == dataset)).scalars())
    candidates = [c for c in load_candidates(store, dataset, generated=generated).ids if c not in routed]  # a B is never rated already
    picked = {p.conversation_id for p in picks}
    by_context: dict[str, list[tuple[bool, str]]] = {}
    key_of: dict[str, str] = {}
    with store.connect() as conn:
        for start in range(0, len(candidates), 5_000):
            chunk = candidates[start : start + 5_000]
            for cid, messages, source in conn.execute(sa.select(conversations.c.id, conversations.c.messages,
                                                                conversations.c.source)
                                                      .where(conversations.c.id.in_(chunk))):
                key = context_key(loads(messages) or [])
                if key is not None:
                    key_of[cid] = key
                    by_context.setdefault(key, []).append((source == GENERATED, cid))
    used: set[str] = set()
    out = []
    for pick in picks:
        siblings = [c for _, c in sorted(by_context.get(key_of.get(pick.conversation_id, ""), []))
                    if c not in picked and c not in used]
        if siblings:
            used.add(siblings[0])
            pick = Pick(pick.conversation_id, pick.priority, pick.strategy, siblings[0])
        out.append(pick)
    return out
