"""A faster `PUT /api/v1/datasets/{id}/records/bulk` for the batch that `curate annotate push` sends: new records.

argilla-server 2.8.0 stores a bulk upsert through its ORM: one multi-row INSERT … RETURNING per table that
SQLAlchemy compiles afresh for every batch (tens of thousands of bind parameters), a reload of every record with
its suggestions and vectors to index it, and a response serialised from those ORM objects and compressed. That was
about 6 ms of server CPU per record with a 384-d vector and five suggestions, so a push could not pass ~150 records/s.

When every item of a batch is a new record (no record of the dataset has its external id or id) without responses,
and no webhook is enabled, `FastUpsertRecordsBulk` does the same work directly: argilla-server's own validator for
each item, one executemany INSERT each for records, suggestions and vectors in the request's transaction, the search
index fed from the validated payload, and the same response JSON written with orjson. A client that sends
`Prefer: return=minimal` (RFC 7240; `curate annotate push` does, a stock server ignores it) gets only each
record's id, external id and status back. Any other batch (an existing record, responses, an invalid item,
an enabled webhook) takes argilla-server's own path unchanged, so its behaviour and errors stay the server's.
`CURATE_ANNOTATE_DIRECT_BULK=0` in the server's environment turns the direct path off.
"""
from __future__ import annotations

import os
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from starlette.responses import Response

from argilla_server.api.schemas.v1.records_bulk import RecordsBulkUpsert
from argilla_server.bulk.records_bulk import UpsertRecordsBulk
from argilla_server.contexts.webhooks import list_enabled_webhooks
from argilla_server.enums import RecordStatus
from argilla_server.models import Dataset, Record, Suggestion, Vector
from argilla_server.validators.records import RecordUpsertValidator

R, S, V = (model.__table__ for model in (Record, Suggestion, Vector))
_PREFER_MINIMAL: ContextVar[bool] = ContextVar("curate_prefer_minimal", default=False)


class FastUpsertRecordsBulk(UpsertRecordsBulk):
    """argilla-server's bulk upsert, with a direct path for batches of new records (see the module docstring)."""

    async def upsert_records_bulk(self, dataset: Dataset, bulk_upsert: RecordsBulkUpsert, raise_on_error: bool = True):
        from annotations.server.search import CurateSearchEngine, dataset_index, document, suggestion_document

        items = bulk_upsert.items
        if (not isinstance(self._search_engine, CurateSearchEngine) or any(item.responses for item in items)
                or await self._any_existing(dataset, items) or await list_enabled_webhooks(self._db)):
            return await super().upsert_records_bulk(dataset, bulk_upsert, raise_on_error)
        try:
            for item in items:
                await RecordUpsertValidator.validate(item, dataset, None)
        except Exception:  # argilla-server's path raises (or skips) with its own message
            return await super().upsert_records_bulk(dataset, bulk_upsert, raise_on_error)

        start = datetime.utcnow()
        questions = {q.id: q.name for q in dataset.questions}
        vector_settings = {v.name: v for v in dataset.vectors_settings}
        records, suggestions, vectors, out = [], [], [], []
        for position, item in enumerate(items):
            # one microsecond apart: the records listing pages by `inserted_at` alone, so ties would make it unstable
            now = start + timedelta(microseconds=position)
            record_id = uuid4()
            fields = {name: _plain(value) for name, value in item.fields.items()}
            records.append({"id": record_id, "fields": fields, "metadata": item.metadata, "external_id": item.external_id,
                            "dataset_id": dataset.id, "status": RecordStatus.pending, "inserted_at": now, "updated_at": now})
            item_suggestions = [{"id": uuid4(), "record_id": record_id, **s.model_dump(), "inserted_at": now, "updated_at": now}
                                for s in item.suggestions or []]
            suggestions += item_suggestions
            item_vectors = {name: vector_settings[name] for name in (item.vectors or {})}
            vectors += [{"id": uuid4(), "record_id": record_id, "vector_settings_id": settings.id,
                         "value": orjson.dumps(item.vectors[name]).decode(), "inserted_at": now, "updated_at": now}
                        for name, settings in item_vectors.items()]
            out.append((record_id, item, fields, item_suggestions, now))

        if records:
            await self._db.execute(sa.insert(R), records)
        if suggestions:
            await self._db.execute(sa.insert(S), suggestions)
        if vectors:
            # the vectors arrive serialised: stdlib json in SQLAlchemy's JSON type costs more than the rest of the row
            await self._db.execute(sa.insert(V).values(value=sa.bindparam("value", type_=sa.Text)), vectors)
        await self._db.commit()

        index = dataset_index(dataset)
        for record_id, item, fields, item_suggestions, now in out:
            index.upsert(document(
                record_id, item.external_id, "pending", now, now, fields, item.metadata, index.fields,
                suggestions={questions[s["question_id"]]: suggestion_document(s["value"], s["score"], s["agent"], s["type"])
                             for s in item_suggestions},
                responses=[],
                vectors={str(vector_settings[name].id): value for name, value in (item.vectors or {}).items()},
            ))
        if _PREFER_MINIMAL.get():
            body = {"items": [{"id": rid, "external_id": item.external_id, "status": "pending"} for rid, item, _, _, _ in out]}
        else:
            body = {"items": [_record_json(dataset, rid, item, fields, item_suggestions, now)
                              for rid, item, fields, item_suggestions, now in out]}
        return Response(orjson.dumps(body), media_type="application/json")

    async def _any_existing(self, dataset: Dataset, items: list) -> bool:
        external_ids = [i.external_id for i in items if i.external_id is not None]
        ids = [i.id for i in items if i.id is not None]
        condition = sa.or_(R.c.external_id.in_(external_ids), R.c.id.in_(ids))
        query = sa.select(R.c.id).where(R.c.dataset_id == dataset.id, condition).limit(1)
        return (await self._db.execute(query)).first() is not None


def _plain(value: Any) -> Any:
    """`jsonable_encoder` for what a field holds (text, chat messages, custom dicts), without its generic dispatch."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return jsonable_encoder(value)


def _record_json(dataset: Dataset, record_id: UUID, item: Any, fields: dict, suggestions: list[dict], now: datetime) -> dict:
    """The record as argilla-server's `Record` schema serialises it after a bulk upsert (every key, as stored)."""
    return {
        "id": record_id, "status": "pending", "fields": fields, "metadata": item.metadata, "external_id": item.external_id,
        "responses": [],
        "suggestions": [{"id": s["id"], "question_id": s["question_id"], "type": s["type"], "value": s["value"],
                         "agent": s["agent"], "score": s["score"], "inserted_at": now, "updated_at": now} for s in suggestions],
        "vectors": dict(item.vectors or {}),
        "dataset_id": dataset.id, "inserted_at": now, "updated_at": now,
    }


def install() -> None:
    """Serve the bulk upsert endpoint through `FastUpsertRecordsBulk` unless CURATE_ANNOTATE_DIRECT_BULK=0."""
    from argilla_server.api.handlers.v1.datasets import records_bulk as handlers

    enabled = os.environ.get("CURATE_ANNOTATE_DIRECT_BULK", "1").strip().lower() not in ("0", "false", "no", "off")
    handlers.UpsertRecordsBulk = FastUpsertRecordsBulk if enabled else UpsertRecordsBulk


def honour_prefer_minimal(app: Any) -> Any:
    """Wrap the ASGI app so that a request's `Prefer: return=minimal` header reaches the bulk upsert above."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            prefer = b",".join(v for k, v in scope.get("headers", ()) if k == b"prefer").lower()
            token = _PREFER_MINIMAL.set(b"return=minimal" in prefer)
            try:
                return await app(scope, receive, send)
            finally:
                _PREFER_MINIMAL.reset(token)
        return await app(scope, receive, send)

    return wrapped
