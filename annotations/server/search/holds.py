"""Spread a team over the queue: a record that enough annotators are already working on goes to the back of the
others' queues.

The priority queue serves every annotator the same record first (the highest failure score), so a team of 20 with
`min_submitted` = 2 would all rate that record at once, and all but two of them would do it for nothing. When the
queue page is served to a user, its records are *held* for that user for HOLD_S seconds, or until that user
submits or discards (a draft renews the hold: only the slots held are looked at, and a record with two drafts is
still pending). For another user, a record whose holds by others plus others' submitted or draft responses reach its
dataset's `min_submitted` comes after every other match. Nothing is hidden: with fewer records than annotators, held records
are still served, and an explicit sort or filter keeps its meaning among the records that are not held.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterable
from uuid import UUID

import numpy as np

from annotations.server.index import DatasetIndex
from argilla_server.search_engine.base import AndFilter, Filter, RecordFilterScope, ResponseFilterScope, TermsFilter

HOLD_S = float(os.environ.get("CURATE_ANNOTATE_HOLD_S", "120"))
_HOLDS: dict[UUID, dict[int, dict[str, float]]] = {}  # dataset id -> slot -> user id -> held since


def min_submitted(dataset: Any) -> int:
    distribution = getattr(dataset, "distribution", None) or {}
    return int(distribution.get("min_submitted", 1) or 1) if isinstance(distribution, dict) else 1


def is_user_queue(flt: Filter | None, user: str) -> bool:
    """The request behind the UI's queue: the user's own pending records among the records still pending."""
    mine = unfinished = False
    for sub in flt.filters if isinstance(flt, AndFilter) else [flt]:
        scope = getattr(sub, "scope", None)
        if not isinstance(sub, TermsFilter) or "pending" not in map(str, sub.values):
            continue
        if isinstance(scope, ResponseFilterScope) and scope.question is None and scope.user is not None:
            mine |= str(scope.user.id) == user
        elif isinstance(scope, RecordFilterScope) and scope.property == "status":
            unfinished = True
    return mine and unfinished


def hold(dataset_id: UUID, slots: Iterable[int], user: str) -> None:
    now = time.monotonic()
    held = _HOLDS.setdefault(dataset_id, {})
    for slot in slots:
        held.setdefault(int(slot), {})[user] = now


def release(dataset_id: UUID, slot: int, user: str) -> None:
    """The user answered (or dropped) the record: their hold ends."""
    users = _HOLDS.get(dataset_id, {}).get(slot)
    if users is not None:
        users.pop(user, None)
        if not users:
            del _HOLDS[dataset_id][slot]


def responded(dataset_id: UUID, slot: int, user: str, status: str) -> None:
    """A response was written: a draft renews the user's hold (a record with two drafts is still pending, and only
    held records are looked at), a submission or a discard ends it."""
    if status == "draft":
        hold(dataset_id, [slot], user)
    else:
        release(dataset_id, slot, user)


def forget(dataset_id: UUID) -> None:
    _HOLDS.pop(dataset_id, None)


def behind_holds(order: np.ndarray, index: DatasetIndex, dataset_id: UUID, user: str, needed: int) -> np.ndarray:
    """`order` with the records that others already cover moved to its end, each part in its own order."""
    held = _HOLDS.get(dataset_id)
    if not held:
        return order
    now, covered = time.monotonic(), []
    for slot, users in list(held.items()):
        active = [u for u, since in users.items() if now - since < HOLD_S]
        if len(active) != len(users):
            held[slot] = users = {u: users[u] for u in active}
            if not users:
                del held[slot]
                continue
        if slot >= index.size:
            continue
        responses = index.responses[slot] or {}
        answered = sum(1 for u, r in responses.items() if u != user and r["status"] in ("submitted", "draft"))
        if answered + sum(1 for u in users if u != user and u not in responses) >= needed:
            covered.append(slot)
    if not covered:
        return order
    demoted = np.zeros(index.size, dtype=bool)
    demoted[covered] = True
    later = demoted[order]
    return np.concatenate((order[~later], order[later]))
