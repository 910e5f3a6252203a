"""`GET /api/v1/curate/datasets/{dataset_id}/responses`: a dataset's responses changed since a time, in one query.

Argilla's API offers responses only inside whole records (`GET /datasets/{id}/records?include=responses`), so a pull
through it reads and serialises every record of the dataset, rated or not, on every run. The embedded server adds
this endpoint for `curate annotate pull`: the responses themselves, newest-changed last, with their record's
external id, paged by a keyset cursor so that a large dataset streams in bounded pages. It asks the same
permission as Argilla's records listing with all responses (an owner, or an admin of the dataset's workspace).
A stock Argilla server answers 404 here, and pull falls back to the records listing.

Query: `since` (ISO time; responses whose `updated_at` is at or after it), `after` (the cursor of the previous
page), `limit`. Answer: {"items": [{"id", "record_id", "external_id", "user_id", "status", "values",
"inserted_at", "updated_at"}], "next": cursor or null}.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional
from uuid import UUID

import orjson
import sqlalchemy as sa
from fastapi import Depends, Query, Security
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response as HTTPResponse

from argilla_server.api.policies.v1 import DatasetPolicy, authorize
from argilla_server.database import get_async_db
from argilla_server.errors.future import UnprocessableEntityError
from argilla_server.models import Dataset, Record, Response, User
from argilla_server.security import auth

PATH = "/curate/datasets/{dataset_id}/responses"
LIMIT_DEFAULT, LIMIT_MAX = 5_000, 20_000
P, R = Response.__table__, Record.__table__


async def list_dataset_responses(
    *,
    dataset_id: UUID,
    since: Optional[datetime] = None,
    after: Optional[str] = None,
    limit: int = Query(default=LIMIT_DEFAULT, ge=1, le=LIMIT_MAX),
    db: AsyncSession = Depends(get_async_db),
    current_user: User = Security(auth.get_current_user),
) -> HTTPResponse:
    dataset = await Dataset.get_or_raise(db, dataset_id)
    await authorize(current_user, DatasetPolicy.list_records_with_all_responses(dataset))
    query = (
        sa.select(P.c.id, P.c.record_id, R.c.external_id, P.c.user_id, P.c.status, sa.type_coerce(P.c["values"], sa.Text),
                  P.c.inserted_at, P.c.updated_at)
        .select_from(P.join(R, R.c.id == P.c.record_id))
        .where(R.c.dataset_id == dataset.id)
        .order_by(P.c.updated_at, P.c.id)
        .limit(limit)
    )
    if since is not None:
        if since.tzinfo is not None:  # the database holds naive UTC times
            since = since.astimezone(timezone.utc).replace(tzinfo=None)
        query = query.where(P.c.updated_at >= since)
    if after:
        at, last_id = _cursor(after)
        query = query.where(sa.or_(P.c.updated_at > at, sa.and_(P.c.updated_at == at, P.c.id > last_id)))
    rows = (await db.execute(query)).all()
    items = [
        {"id": rid, "record_id": record_id, "external_id": external_id, "user_id": user_id,
         "status": getattr(status, "value", status), "values": _values(values),
         "inserted_at": inserted_at, "updated_at": updated_at}
        for rid, record_id, external_id, user_id, status, values, inserted_at, updated_at in rows
    ]
    following = f"{rows[-1].updated_at.isoformat()}|{rows[-1].id}" if len(rows) == limit else None
    return HTTPResponse(orjson.dumps({"items": items, "next": following}), media_type="application/json")


def _values(raw: object) -> object:
    return orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw


def _cursor(after: str) -> tuple[datetime, UUID]:
    try:
        at, last_id = after.split("|")
        return datetime.fromisoformat(at), UUID(last_id)
    except ValueError as exc:
        raise UnprocessableEntityError(f"`after` must be the `next` value of a previous page, not {after!r}") from exc


def install() -> None:
    """Add the endpoint to argilla-server's v1 API (idempotent)."""
    from argilla_server.api.routes import api_v1

    if any(getattr(route, "path", None) == PATH for route in api_v1.router.routes):
        return
    api_v1.add_api_route(PATH, list_dataset_responses, methods=["GET"], include_in_schema=True,
                         summary="Curate: a dataset's responses changed since a time (keyset-paged)")
