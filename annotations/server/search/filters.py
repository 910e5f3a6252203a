"""Filter and sort evaluation over a `DatasetIndex`: argilla-server's filter and order objects become numpy masks
and lexsort keys, with the semantics of the Elasticsearch engine (missing values never match and sort last)."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Optional, Union
from uuid import UUID

import numpy as np

from annotations.server.index import STATUS_CODES, DatasetIndex, sort_key
from annotations.server.search.documents import date_bound, enum_value
from argilla_server.search_engine.base import (
    AndFilter,
    Filter,
    MetadataFilterScope,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SuggestionFilterScope,
    TermsFilter,
)


def queue_settings() -> tuple[str, str]:
    """(order, priority metadata property) of a user's unsorted queue: priority | random | inserted."""
    order = os.environ.get("CURATE_ANNOTATE_QUEUE_ORDER", "priority")
    return order, os.environ.get("CURATE_ANNOTATE_PRIORITY_FIELD", "failure_score")



def default_order(index: DatasetIndex, user_id: Optional[Union[UUID, str]]) -> np.ndarray:
    """Insertion order; for a user's queue, priority (or a per-user shuffle, as Argilla does) by configuration."""
    queue_order, priority = queue_settings()
    slots = np.arange(index.size)
    if user_id is None or queue_order == "inserted":
        return slots
    if queue_order == "random":
        seed = int.from_bytes(hashlib.sha256(str(user_id).encode()).digest()[:8], "little")
        return index.cached_order(("random", str(user_id)), lambda: np.random.default_rng(seed).permutation(index.size))
    return index.cached_order(
        ("priority", priority),
        lambda: np.lexsort([slots, sort_key(index.metadata_values(priority), descending=True)]),
    )


def filter_mask(index: DatasetIndex, flt: Filter) -> np.ndarray:
    if isinstance(flt, AndFilter):
        mask = np.ones(index.size, dtype=bool)
        for sub in flt.filters:
            mask &= filter_mask(index, sub)
        return mask
    scope = flt.scope
    if isinstance(scope, ResponseFilterScope):
        return _response_mask(index, flt)
    if isinstance(scope, (MetadataFilterScope, SuggestionFilterScope)):
        values = _scope_values(index, scope)
    elif isinstance(scope, RecordFilterScope):
        if scope.property == "status" and isinstance(flt, TermsFilter):
            # The UI sends this with every queue page; a boolean column answers it without a Python loop.
            wanted = {str(v) for v in flt.values}
            completed = index.completed[: index.size]
            return (completed & ("completed" in wanted)) | (~completed & ("pending" in wanted))
        values = _record_property(index, scope.property)
        if isinstance(flt, RangeFilter) and scope.property in ("inserted_at", "updated_at"):
            ge = None if flt.ge is None else date_bound(flt.ge, upper=False)
            le = None if flt.le is None else date_bound(flt.le, upper=True)
            return _in_range(values, ge, le)
    else:
        raise ValueError(f"Cannot process request for search scope {scope}")
    return _match(values, flt)


def _record_property(index: DatasetIndex, prop: str) -> np.ndarray:
    n = index.size
    if prop == "status":
        return np.where(index.completed[:n], "completed", "pending").astype(object)
    if prop == "id":
        return np.array([str(i) if i else None for i in index.ids], dtype=object)
    if prop == "external_id":
        return index.external_id[:n]
    if prop in ("inserted_at", "updated_at"):
        return getattr(index, prop)[:n]
    raise ValueError(f"Cannot process record property {prop}")


def _match(values: np.ndarray, flt: Filter) -> np.ndarray:
    """Terms: any of the value's terms is listed. Range: ge <= value <= le. Missing values never match."""
    if isinstance(flt, RangeFilter):
        return _in_range(values, _number(flt.ge), _number(flt.le))
    if isinstance(flt, TermsFilter):
        wanted = {str(v) for v in flt.values}
        if values.dtype != object:
            return np.isin(values.astype(str), list(wanted))

        def hit(v: Any) -> bool:
            if v is None:
                return False
            if isinstance(v, (list, tuple)):
                return any(str(x) in wanted for x in v)
            return str(v) in wanted

        return np.fromiter((hit(v) for v in values), dtype=bool, count=len(values))
    raise ValueError(f"Cannot process request for filter {flt}")


def _in_range(values: np.ndarray, ge: float | None, le: float | None) -> np.ndarray:
    if values.dtype == object:
        values = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in values], dtype=np.float64)
    values = values.astype(np.float64)
    mask = ~np.isnan(values)
    if ge is not None:
        mask &= values >= ge
    if le is not None:
        mask &= values <= le
    return mask


def _number(bound: Any) -> float | None:
    """A numeric range bound; the request schema also lets strings through, which Elasticsearch parses as numbers."""
    if bound is None or isinstance(bound, (int, float)):
        return bound
    try:
        return float(bound)
    except ValueError:
        raise ValueError(f"range bound {bound!r} is not a number") from None


def _response_mask(index: DatasetIndex, flt: Filter) -> np.ndarray:
    scope: ResponseFilterScope = flt.scope
    user = str(scope.user.id) if scope.user else None
    if scope.question is None:
        if scope.property != "status" or not isinstance(flt, TermsFilter):
            raise ValueError(f"Cannot process filter scope {scope}")
        wanted = {STATUS_CODES[str(v)] for v in flt.values if str(v) in STATUS_CODES}
        if user is not None:
            codes = index.user_codes(user)
            mask = np.isin(codes, list(wanted))
            if "pending" in {str(v) for v in flt.values}:
                mask |= codes == 0
            return mask
        mask = np.zeros(index.size, dtype=bool)
        if "pending" in {str(v) for v in flt.values}:
            mask |= index.n_responses[: index.size] == 0
        for slot in np.flatnonzero(index.n_responses[: index.size]):
            if any(STATUS_CODES.get(r["status"]) in wanted for r in index.responses[slot].values()):
                mask[slot] = True
        return mask
    mask = np.zeros(index.size, dtype=bool)
    for slot in np.flatnonzero(index.n_responses[: index.size]):
        for uid, response in index.responses[slot].items():
            if user is not None and uid != user:
                continue
            if _match(np.array([response["values"].get(scope.question)], dtype=object), flt)[0]:
                mask[slot] = True
                break
    return mask


def _scope_values(index: DatasetIndex, scope: MetadataFilterScope | SuggestionFilterScope) -> np.ndarray:
    """Per-record values of a metadata property, or of a suggestion's value/score/agent, for filters and sorts."""
    if isinstance(scope, MetadataFilterScope):
        return index.metadata_values(scope.metadata_property)
    prop = scope.property or "value"
    return index.slot_values(lambda s: ((index.suggestions[s] or {}).get(scope.question) or {}).get(prop))


def order_key(index: DatasetIndex, order: Order) -> np.ndarray:
    scope = order.scope
    descending = str(enum_value(order.order)) == "desc"
    if isinstance(scope, (MetadataFilterScope, SuggestionFilterScope)):
        values = _scope_values(index, scope)
    elif isinstance(scope, RecordFilterScope):
        values = _record_property(index, scope.property)
    elif isinstance(scope, ResponseFilterScope):
        values = _response_sort_values(index, scope)
    else:
        raise ValueError(f"Cannot process request for search scope {scope}")
    return sort_key(values, descending)


def _response_sort_values(index: DatasetIndex, scope: ResponseFilterScope) -> np.ndarray:
    """Elasticsearch sorts on the mean of the (user's) responses' values; statuses sort as their names."""
    user = str(scope.user.id) if scope.user else None
    out = np.full(index.size, None, dtype=object)
    for slot in np.flatnonzero(index.n_responses[: index.size]):
        picked = [r for uid, r in index.responses[slot].items() if user is None or uid == user]
        if scope.question:
            numbers = [r["values"].get(scope.question) for r in picked]
            numbers = [v for v in numbers if isinstance(v, (int, float))]
            out[slot] = float(np.mean(numbers)) if numbers else None
        elif picked:
            out[slot] = picked[0]["status"]
    return out
