"""The process-wide indexes, and their rebuild from argilla-server's own database (the index is a cache)."""
from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Text, select, type_coerce
from sqlalchemy.orm import selectinload

from annotations.server.index import DatasetIndex
from annotations.server.search.documents import dataset_schema, document, enum_value, suggestion_document
from argilla_server.models import Dataset, Record, Response, Suggestion, Vector

INDEXES: dict[UUID, DatasetIndex] = {}  # dataset id -> its index, shared by every engine instance of the process
REBUILD_BATCH = 5_000
R, S, P, V = (model.__table__ for model in (Record, Suggestion, Response, Vector))


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
            index = INDEXES[dataset.id] = DatasetIndex(*dataset_schema(dataset))
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
                        {"id": str(resp_id), "user_id": str(user_id), "status": str(enum_value(status)), "values": answers})
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
    index = INDEXES.get(dataset.id)
    if index is None:
        index = INDEXES[dataset.id] = DatasetIndex(*dataset_schema(dataset))
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


