"""argilla-server's `SearchEngine` over the process-wide in-memory indexes, registered as "curate"."""
from __future__ import annotations

import asyncio
import logging
from typing import Iterable, List, Optional, Union
from uuid import UUID

import numpy as np

from annotations.server.index import STATUS_CODES, DatasetIndex
from annotations.server.search.documents import dataset_schema, enum_value, record_doc, response_doc, suggestion_doc
from annotations.server.search.filters import default_order, filter_mask, order_key
from annotations.server.search.holds import (
    behind_holds,
    forget,
    hold,
    is_user_queue,
    min_submitted,
    release,
    responded,
)
from annotations.server.search.rebuild import INDEXES, dataset_index, rebuild_from_database
from argilla_server.enums import SimilarityOrder
from argilla_server.models import Dataset, MetadataProperty, Record, Response, Suggestion, User, VectorSettings
from argilla_server.search_engine.base import (
    Filter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataMetrics,
    Order,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    TermsMetrics,
    TextQuery,
)

ENGINE_NAME = "curate"
_LOGGER = logging.getLogger("curate.argilla")
_LOADED = asyncio.Event()  # set once the indexes hold the database's records
_LOAD_LOCK: asyncio.Lock | None = None


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
        return {"name": ENGINE_NAME, "indexes": len(INDEXES), "records": sum(i.size for i in INDEXES.values())}

    # ---- writes --------------------------------------------------------------------------------------------

    def _index(self, dataset_id: UUID) -> DatasetIndex | None:
        return INDEXES.get(dataset_id)

    async def create_index(self, dataset: Dataset) -> None:
        INDEXES[dataset.id] = DatasetIndex(*dataset_schema(dataset))

    async def delete_index(self, dataset: Dataset) -> None:
        INDEXES.pop(dataset.id, None)
        forget(dataset.id)

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty) -> None:
        index = self._index(dataset.id)
        if index is not None:
            index.configure_metadata(metadata_property.name, str(enum_value(metadata_property.type)))

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        pass  # a vector column is created with its first value

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        index = dataset_index(dataset)
        for record in records:
            index.upsert(record_doc(record, index.fields))

    async def partial_record_update(self, record: Record, **update) -> None:
        index = self._index(record.dataset_id)
        if index is not None and "status" in update:
            index.set_status(record.id, str(enum_value(update["status"])))

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
            doc = response_doc(response)
            index.set_response(slot, doc)
            responded(response.record.dataset_id, slot, doc["user_id"], doc["status"])

    async def delete_record_response(self, response: Response) -> None:
        index, slot = self._slot(response.record)
        if slot is not None:
            index.remove_response(slot, str(response.user_id))
            release(response.record.dataset_id, slot, str(response.user_id))

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        index, slot = self._slot(suggestion.record)
        if slot is not None:
            index.set_suggestion(slot, suggestion.question.name, suggestion_doc(suggestion))

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
        kind = str(enum_value(metadata_property.type))
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
            mask &= filter_mask(index, filter)
        if sort:
            order = np.lexsort([order_key(index, o) for o in reversed(sort)])
        elif scores is not None:
            order = np.lexsort([np.arange(index.size), -scores])
        else:
            order = default_order(index, user_id)
        user = str(user_id) if user_id is not None else None
        queue = user is not None and scores is None and is_user_queue(filter, user)
        if queue:  # spread a team over the queue (annotations/server/search/holds.py)
            order = behind_holds(order, index, dataset.id, user, min_submitted(dataset))
        hits = order[mask[order]]
        page = hits[offset : offset + limit]
        if queue:
            hold(dataset.id, page, user)
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
            mask &= filter_mask(index, filter)
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
