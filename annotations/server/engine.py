"""The in-process search engine that argilla-server uses in place of Elasticsearch.

It implements every abstract method of `argilla_server.search_engine.base.SearchEngine` with the semantics of
the Elasticsearch engine in `search_engine/commons.py`: per-user response status, terms/range filters on
metadata, suggestions, responses and record properties, sorting (missing values last), simple_query_string text
search (chat fields too), cosine similarity over vectors (most and least similar, excluding the record itself),
progress counts and metadata metrics. One difference is deliberate: when a user asks for their queue with no sort,
records come in routing-priority order (highest `failure_score` first) instead of Elasticsearch's per-user shuffle.

Indexes live in memory, shared by every engine instance of the process, and are rebuilt from argilla-server's own
database the first time an engine is created, so a restart loses nothing.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, List, Optional, Union
from uuid import UUID

import numpy as np
import orjson
from sqlalchemy import Text, select, type_coerce
from sqlalchemy.orm import selectinload

from annotations.server.index import STATUS_CODES, DatasetIndex, sort_key
from argilla_server.enums import SimilarityOrder
from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Record,
    Response,
    Suggestion,
    User,
    Vector,
    VectorSettings,
)
from argilla_server.search_engine.base import (
    AndFilter,
    Filter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)

ENGINE_NAME = "curate"
_LOGGER = logging.getLogger("curate.argilla")
_INDEXES: dict[UUID, DatasetIndex] = {}
_LOADED = asyncio.Event()  # set once the indexes hold the database's records
_LOAD_LOCK: asyncio.Lock | None = None
REBUILD_BATCH = 5_000
R, S, P, V = (model.__table__ for model in (Record, Suggestion, Response, Vector))


def queue_settings() -> tuple[str, str]:
    """(order, priority metadata property) of a user's unsorted queue: priority | random | inserted."""
    order = os.environ.get("CURATE_ANNOTATE_QUEUE_ORDER", "priority")
    return order, os.environ.get("CURATE_ANNOTATE_PRIORITY_FIELD", "failure_score")


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def _schema(dataset: Dataset) -> tuple[dict, dict, list]:
    fields = {f.name: f.settings["type"] for f in dataset.fields}
    metadata = {p.name: str(_value(p.type)) for p in dataset.metadata_properties}
    return fields, metadata, [q.name for q in dataset.questions]


def _response_doc(response: Response) -> dict:
    values = {q: (v or {}).get("value") for q, v in (response.values or {}).items()}
    return {"id": str(response.id), "user_id": str(response.user_id), "status": str(_value(response.status)), "values": values}


def _suggestion_doc(suggestion: Suggestion) -> dict:
    return suggestion_document(suggestion.value, suggestion.score, suggestion.agent, suggestion.type)


def suggestion_document(value: Any, score: Any, agent: str | None, kind: Any) -> dict:
    return {"value": value, "score": score, "agent": agent, "type": _value(kind)}


def document(record_id: UUID, external_id: str | None, status: Any, inserted_at: Any, updated_at: Any, fields: dict | None,
         metadata: dict | None, field_types: dict[str, str], suggestions: dict, responses: list, vectors: dict) -> dict:
    text = {}
    for name, kind in field_types.items():
        value = (fields or {}).get(name)
        if kind == "image" or value is None:
            continue
        if kind == "chat" and isinstance(value, list):
            value = " ".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
        text[name] = str(value)
    return {
        "id": record_id,
        "external_id": external_id,
        "status": str(_value(status)),
        "inserted_at": epoch(inserted_at) if inserted_at else 0.0,
        "updated_at": epoch(updated_at) if updated_at else 0.0,
        "text": text,
        "metadata": dict(metadata or {}),
        "suggestions": suggestions,
        "responses": responses,
        "vectors": vectors,
    }


def epoch(moment: datetime) -> float:
    """Seconds since the epoch; a naive datetime is UTC, as argilla-server stores it and Elasticsearch reads it."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


_EPOCH_MILLIS = re.compile(r"-?\d+(\.\d+)?")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def date_bound(value: Any, upper: bool) -> float:
    """A range bound on a record date, in epoch seconds, read as Elasticsearch reads its `date_nanos` mapping
    (`strict_date_optional_time||epoch_millis`): a number, or a string of digits, is epoch milliseconds; a string
    is ISO-8601 with or without a fraction and a zone (none means UTC). An upper bound given as a date alone
    covers that whole day, as Elasticsearch rounds `lte` up over missing components."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) / 1000
    text = str(value).strip()
    if _EPOCH_MILLIS.fullmatch(text):
        return float(text) / 1000
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a date: use ISO-8601 (2024-05-01T12:00:00Z) or epoch milliseconds") from None
    if upper and _DATE_ONLY.fullmatch(text):
        moment += timedelta(days=1, microseconds=-1)
    return epoch(moment)


def _record_doc(record: Record, field_types: dict[str, str]) -> dict:
    return document(
        record.id, record.external_id, record.status, record.inserted_at, record.updated_at, record.fields,
        record.metadata_, field_types,
        suggestions={s.question.name: _suggestion_doc(s) for s in record.suggestions},
        responses=[_response_doc(r) for r in record.responses],
        vectors={str(v.vector_settings_id): v.value for v in record.vectors},
    )


async def rebuild_from_database() -> int:
    """Index every published dataset's records from argilla-server's database; returns the record count.

    SQLAlchemy Core and orjson rather than the ORM: at 100,000 records with vectors and five suggestions each,
    loading ORM objects takes minutes, and this runs before the server answers its first request.
    """
    from argilla_server.database import AsyncSessionLocal

    total = 0
    async with AsyncSessionLocal() as db:
        datasets = (
            await db.scalars(
                select(Dataset).options(
                    selectinload(Dataset.fields),
                    selectinload(Dataset.questions),
                    selectinload(Dataset.metadata_properties),
                    selectinload(Dataset.vectors_settings),
                )
            )
        ).all()
        for dataset in datasets:
            if dataset.is_draft:
                continue
            index = _INDEXES[dataset.id] = DatasetIndex(*_schema(dataset))
            questions = {q.id.hex: q.name for q in dataset.questions}
            while True:
                rows = (await db.execute(
                    select(_raw(R.c.id), R.c.external_id, R.c.status, R.c.inserted_at, R.c.updated_at,
                           _raw(R.c.fields), _raw(R.c["metadata"]))
                    .where(R.c.dataset_id == dataset.id)
                    .order_by(R.c.inserted_at, R.c.id)
                    .limit(REBUILD_BATCH)
                    .offset(index.size)
                )).all()
                if not rows:
                    break
                ids = [UUID(_hex(row[0])) for row in rows]
                suggestions: dict[str, dict] = {}
                for rid, qid, value, score, agent, kind in await db.execute(
                    select(_raw(S.c.record_id), _raw(S.c.question_id), _raw(S.c.value), _raw(S.c.score), S.c.agent, S.c.type)
                    .where(S.c.record_id.in_(ids))
                ):
                    suggestions.setdefault(_hex(rid), {})[questions.get(_hex(qid), str(qid))] = suggestion_document(
                        _json(value), _json(score), agent, kind)
                responses: dict[str, list] = {}
                for rid, resp_id, user_id, status, values in await db.execute(
                    select(_raw(P.c.record_id), P.c.id, P.c.user_id, P.c.status, _raw(P.c["values"])).where(P.c.record_id.in_(ids))
                ):
                    answers = {q: (v or {}).get("value") for q, v in (_json(values) or {}).items()}
                    responses.setdefault(_hex(rid), []).append(
                        {"id": str(resp_id), "user_id": str(user_id), "status": str(_value(status)), "values": answers})
                vectors: dict[str, dict] = {}
                for rid, vsid, value in await db.execute(
                    select(_raw(V.c.record_id), V.c.vector_settings_id, _raw(V.c.value)).where(V.c.record_id.in_(ids))
                ):
                    vectors.setdefault(_hex(rid), {})[str(vsid)] = _json(value)
                for rid, (raw_id, external_id, status, inserted_at, updated_at, fields, metadata) in zip(ids, rows):
                    key = rid.hex
                    index.upsert(document(rid, external_id, status, inserted_at, updated_at, _json(fields), _json(metadata),
                                      index.fields, suggestions.get(key, {}), responses.get(key, []), vectors.get(key, {})))
                total += len(rows)
    return total


def dataset_index(dataset: Dataset) -> DatasetIndex:
    """The dataset's index (created when missing), with its current field types."""
    index = _INDEXES.get(dataset.id)
    if index is None:
        index = _INDEXES[dataset.id] = DatasetIndex(*_schema(dataset))
    index.fields = {f.name: f.settings["type"] for f in dataset.fields}
    return index


def _raw(column: Any) -> Any:
    """The column without its SQLAlchemy type: JSON stays text for orjson, UUIDs stay strings (a million UUID
    objects cost more than the rest of the rebuild)."""
    return type_coerce(column, Text)


def _hex(value: Any) -> str:
    """A UUID as 32 hex digits, whether the driver returned a UUID, its dashed text or SQLite's hex text."""
    return value.hex if isinstance(value, UUID) else str(value).replace("-", "")


def _json(raw: Any) -> Any:
    """Columns read with type_coerce(…, Text) arrive as JSON text (SQLite) or already decoded (some drivers)."""
    return orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw


class CurateSearchEngine(SearchEngine):
    """argilla-server's SearchEngine over the process-wide in-memory indexes."""

    @classmethod
    async def new_instance(cls) -> "CurateSearchEngine":
        global _LOAD_LOCK
        if not _LOADED.is_set():
            _LOAD_LOCK = _LOAD_LOCK or asyncio.Lock()
            async with _LOAD_LOCK:
                if not _LOADED.is_set():
                    count = await rebuild_from_database()
                    _LOGGER.info("search index rebuilt from the database: %d records", count)
                    _LOADED.set()
        return cls()

    async def close(self) -> None:
        pass  # the indexes outlive each request's engine instance

    async def ping(self) -> bool:
        return _LOADED.is_set()

    async def info(self) -> dict:
        return {"name": ENGINE_NAME, "indexes": len(_INDEXES), "records": sum(i.size for i in _INDEXES.values())}

    # ---- writes --------------------------------------------------------------------------------------------

    def _index(self, dataset_id: UUID) -> DatasetIndex | None:
        return _INDEXES.get(dataset_id)

    async def create_index(self, dataset: Dataset) -> None:
        _INDEXES[dataset.id] = DatasetIndex(*_schema(dataset))

    async def delete_index(self, dataset: Dataset) -> None:
        _INDEXES.pop(dataset.id, None)

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty) -> None:
        index = self._index(dataset.id)
        if index is not None:
            index.configure_metadata(metadata_property.name, str(_value(metadata_property.type)))

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        pass  # a vector column is created with its first value

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        index = dataset_index(dataset)
        for record in records:
            index.upsert(_record_doc(record, index.fields))

    async def partial_record_update(self, record: Record, **update) -> None:
        index = self._index(record.dataset_id)
        if index is not None and "status" in update:
            index.set_status(record.id, str(_value(update["status"])))

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        index = self._index(dataset.id)
        for record in records if index is not None else []:
            index.delete(record.id)

    def _slot(self, record: Record) -> tuple[DatasetIndex | None, int | None]:
        index = self._index(record.dataset_id)
        return index, (index.slot_of.get(record.id) if index is not None else None)

    async def update_record_response(self, response: Response) -> None:
        index, slot = self._slot(response.record)
        if slot is not None:
            index.set_response(slot, _response_doc(response))

    async def delete_record_response(self, response: Response) -> None:
        index, slot = self._slot(response.record)
        if slot is not None:
            index.remove_response(slot, str(response.user_id))

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        index, slot = self._slot(suggestion.record)
        if slot is not None:
            index.set_suggestion(slot, suggestion.question.name, _suggestion_doc(suggestion))

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        index, slot = self._slot(suggestion.record)
        if slot is not None:
            index.set_suggestion(slot, suggestion.question.name, None)

    # ---- progress and metrics ------------------------------------------------------------------------------

    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        index = self._index(dataset.id)
        if dataset.is_draft or index is None:
            return {}
        live = index.live()
        completed = int((index.completed[: index.size] & live).sum())
        return {"total": int(live.sum()), "completed": completed, "pending": int(live.sum()) - completed}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        index = self._index(dataset.id)
        if dataset.is_draft or index is None:
            return {}
        codes = index.user_codes(str(user.id))[index.live()]
        counts = {name: int((codes == code).sum()) for name, code in STATUS_CODES.items()}
        return {"total": sum(counts.values()), **{k: v for k, v in counts.items() if v}}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        index = self._index(metadata_property.dataset_id)
        kind = str(_value(metadata_property.type))
        if kind == "terms":
            counts: dict[str, int] = {}
            if index is not None:
                for values in index.metadata_values(metadata_property.name)[index.live()]:
                    for term in values or ():
                        counts[term] = counts.get(term, 0) + 1
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            return TermsMetrics(total=sum(counts.values()), values=[TermsMetrics.TermCount(term=t, count=c) for t, c in ranked])
        values = np.array([]) if index is None else index.metadata_values(metadata_property.name)[index.live()]
        values = values[~np.isnan(values)]
        if kind == "integer":
            return IntegerMetadataMetrics(min=int(values.min()) if len(values) else None, max=int(values.max()) if len(values) else None)
        return FloatMetadataMetrics(min=float(values.min()) if len(values) else None, max=float(values.max()) if len(values) else None)

    # ---- search --------------------------------------------------------------------------------------------

    async def search(
        self,
        dataset: Dataset,
        query: Optional[Union[TextQuery, str]] = None,
        filter: Optional[Filter] = None,  # argilla-server's own keyword
        sort: Optional[List[Order]] = None,
        offset: int = 0,
        limit: int = 100,
        user_id: Optional[Union[UUID, str]] = None,
    ) -> SearchResponses:
        index = self._index(dataset.id)
        if index is None:
            return SearchResponses(items=[], total=0)
        mask = index.live()
        scores = None
        if query is not None:
            text = TextQuery(q=query) if isinstance(query, str) else query
            scores = index.text_scores(text.q, text.field)
            mask &= scores > 0
        if filter is not None:
            mask &= _filter_mask(index, filter)
        if sort:
            order = np.lexsort([_order_key(index, o) for o in reversed(sort)])
        elif scores is not None:
            order = np.lexsort([np.arange(index.size), -scores])
        else:
            order = _default_order(index, user_id)
        hits = order[mask[order]]
        page = hits[offset : offset + limit]
        items = [
            SearchResponseItem(record_id=index.ids[slot], score=float(scores[slot]) if scores is not None else 1.0)
            for slot in page
        ]
        return SearchResponses(items=items, total=int(mask.sum()))

    async def similarity_search(
        self,
        dataset: Dataset,
        vector_settings: VectorSettings,
        value: Optional[List[float]] = None,
        record: Optional[Record] = None,
        query: Optional[Union[TextQuery, str]] = None,
        filter: Optional[Filter] = None,
        max_results: int = 100,
        order: SimilarityOrder = SimilarityOrder.most_similar,
        threshold: Optional[float] = None,
    ) -> SearchResponses:
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity search")
        vector_value = value or record.vector_value_by_vector_settings(vector_settings)
        if not vector_value:
            raise ValueError("Cannot find a vector value to apply with provided info")
        index = self._index(dataset.id)
        key = str(vector_settings.id)
        if index is None or key not in index.vectors:
            return SearchResponses(items=[], total=0)
        mask = index.live() & index.has_vector[key][: index.size]
        if record is not None and record.id in index.slot_of:
            mask[index.slot_of[record.id]] = False
        if filter is not None:
            mask &= _filter_mask(index, filter)
        if query is not None:
            text = TextQuery(q=query) if isinstance(query, str) else query
            mask &= index.text_scores(text.q, text.field) > 0
        candidates = np.flatnonzero(mask)
        probe = np.asarray(vector_value, dtype=np.float32)
        probe /= np.linalg.norm(probe) or 1.0
        if order == SimilarityOrder.least_similar:
            probe = -probe
        # Elasticsearch's cosine score, (1 + cos) / 2, so thresholds mean the same on both engines. One product over
        # the whole column, then the candidates: gathering their rows first would copy the matrix on every request.
        scores = (1.0 + (index.vectors[key][: index.size] @ probe)[candidates]) / 2.0
        k = min(max_results, len(candidates))
        top = np.argpartition(-scores, k - 1)[:k] if 0 < k < len(candidates) else np.arange(len(candidates))
        top = top[np.lexsort([candidates[top], -scores[top]])]
        items = [
            SearchResponseItem(record_id=index.ids[candidates[i]], score=float(scores[i]))
            for i in top
            if threshold is None or scores[i] >= threshold
        ]
        return SearchResponses(items=items, total=len(items))


SearchEngine.register(ENGINE_NAME)(CurateSearchEngine)


# ---- filters and sorting ---------------------------------------------------------------------------------------


def _default_order(index: DatasetIndex, user_id: Optional[Union[UUID, str]]) -> np.ndarray:
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


def _filter_mask(index: DatasetIndex, flt: Filter) -> np.ndarray:
    if isinstance(flt, AndFilter):
        mask = np.ones(index.size, dtype=bool)
        for sub in flt.filters:
            mask &= _filter_mask(index, sub)
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


def _order_key(index: DatasetIndex, order: Order) -> np.ndarray:
    scope = order.scope
    descending = str(_value(order.order)) == "desc"
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
