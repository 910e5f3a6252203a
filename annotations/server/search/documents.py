"""Index documents: what the search engine keeps of an argilla-server record, its responses and suggestions, and
the dates it compares as Elasticsearch's `date_nanos` mapping reads them."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from argilla_server.models import Dataset, Record, Response, Suggestion

def enum_value(x: Any) -> Any:
    return getattr(x, "value", x)


def dataset_schema(dataset: Dataset) -> tuple[dict, dict, list]:
    fields = {f.name: f.settings["type"] for f in dataset.fields}
    metadata = {p.name: str(enum_value(p.type)) for p in dataset.metadata_properties}
    return fields, metadata, [q.name for q in dataset.questions]


def response_doc(response: Response) -> dict:
    values = {q: (v or {}).get("value") for q, v in (response.values or {}).items()}
    return {"id": str(response.id), "user_id": str(response.user_id), "status": str(enum_value(response.status)), "values": values}


def suggestion_doc(suggestion: Suggestion) -> dict:
    return suggestion_document(suggestion.value, suggestion.score, suggestion.agent, suggestion.type)


def suggestion_document(value: Any, score: Any, agent: str | None, kind: Any) -> dict:
    return {"value": value, "score": score, "agent": agent, "type": enum_value(kind)}


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
        "status": str(enum_value(status)),
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


def record_doc(record: Record, field_types: dict[str, str]) -> dict:
    return document(
        record.id, record.external_id, record.status, record.inserted_at, record.updated_at, record.fields,
        record.metadata_, field_types,
        suggestions={s.question.name: suggestion_doc(s) for s in record.suggestions},
        responses=[response_doc(r) for r in record.responses],
        vectors={str(v.vector_settings_id): v.value for v in record.vectors},
    )

