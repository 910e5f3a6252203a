"""`curate export conversations`: one row per conversation, streamed to JSONL or Parquet.

Columns come from the conversation itself plus *column providers*: small functions that, for a batch of
conversation ids, return extra columns from a stage's tables (feedback here; clusters, failure scores and rewards
from the find-the-failures stage). A stage adds a column by appending a provider to `COLUMN_PROVIDERS`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import orjson
import sqlalchemy as sa
from tqdm import tqdm

from curation.endpoints.config import public_url
from curation.errors import InputError
from curation.store import Store
from curation.store.tables import conversations, feedback

# provider(conn, ids) -> {conversation_id: {column: value}}, registered with the columns it may add and their
# kinds ("string", "float", "int" or "json"), so every file has the same columns whether or not a stage has run
Provider = Callable[[sa.Connection, list[str]], dict[str, dict[str, Any]]]
COLUMN_PROVIDERS: list[tuple[dict[str, str], Provider]] = []
BASE_COLUMNS = {"id": "string", "messages": "messages", "model": "string", "created_at": "string",
                "session_id": "string", "user_hash": "string", "metadata": "json"}

BATCH = 2_000


def _feedback_columns(conn: sa.Connection, ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        sa.select(feedback.c.conversation_id, feedback.c.type, feedback.c.value, feedback.c.turn, feedback.c.at)
        .where(feedback.c.conversation_id.in_(ids))
        .order_by(feedback.c.conversation_id, feedback.c.at)
    )
    for cid, kind, value, turn, at in rows:
        event = {"type": kind, "value": None if value is None else orjson.loads(value), "turn": turn, "at": at}
        out.setdefault(cid, {"feedback": []})["feedback"].append(event)
    return out


COLUMN_PROVIDERS.append(({"feedback": "json"}, _feedback_columns))


def iter_rows(store: Store, batch: int = BATCH):
    """Yield export rows in id order, a batch of ids at a time (bounded memory)."""
    extra_columns = [c for cols, _ in COLUMN_PROVIDERS for c in cols]
    last = None
    with store.connect() as conn:
        while True:
            query = sa.select(conversations).order_by(conversations.c.id).limit(batch)
            if last is not None:
                query = query.where(conversations.c.id > last)
            chunk = conn.execute(query).mappings().all()
            if not chunk:
                return
            ids = [r["id"] for r in chunk]
            extras: dict[str, dict[str, Any]] = {}
            for _, provider in COLUMN_PROVIDERS:
                for cid, cols in provider(conn, ids).items():
                    extras.setdefault(cid, {}).update(cols)
            for r in chunk:
                row = {
                    "id": r["id"],
                    "messages": orjson.loads(r["messages"]),
                    "model": r["model"],
                    "created_at": r["created_at"],
                    "session_id": r["session_id"],
                    "user_hash": r["user_hash"],
                    "metadata": _scrubbed(orjson.loads(r["metadata"])) if r["metadata"] else None,
                }
                row.update({c: None for c in extra_columns})
                row.update(extras.get(r["id"], {}))
                row["feedback"] = row["feedback"] or []
                yield row
            last = ids[-1]


def _scrubbed(metadata: Any) -> Any:
    """A generated candidate's endpoint URL without credentials: `curate generate` stored the URL's query string
    (`?key=…`) before it dropped it, and stores written then still hold it; no export may write it out."""
    generated = metadata.get("generated") if isinstance(metadata, dict) else None
    if isinstance(generated, dict) and isinstance(generated.get("endpoint"), str):
        generated["endpoint"] = public_url(generated["endpoint"])
    return metadata


def export_conversations(store: Store, out: str | Path, progress: bool | None = None) -> dict[str, Any]:
    """Write every conversation to `out` (.jsonl, .jsonl.gz or .parquet); returns {"rows", "out"}."""
    out = Path(out)
    name = out.name.lower()
    if not name.endswith((".jsonl", ".jsonl.gz", ".parquet")):
        raise InputError(f"{out}: choose a .jsonl, .jsonl.gz or .parquet file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    total = store.count(conversations)
    rows = tqdm(iter_rows(store), total=total, desc="export", unit="conv", disable=None if progress is None else not progress)
    n = _write_parquet(rows, tmp) if name.endswith(".parquet") else _write_jsonl(rows, tmp, name.endswith(".gz"))
    tmp.replace(out)  # a reader never sees half a file
    return {"rows": n, "out": str(out)}


def _write_jsonl(rows, path: Path, gz: bool) -> int:
    import gzip

    n = 0
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")
            n += 1
    return n


def _write_parquet(rows, path: Path) -> int:
    """Nested values that vary in shape (metadata, feedback, signals) are JSON text columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {**BASE_COLUMNS, **{c: k for cols, _ in COLUMN_PROVIDERS for c, k in cols.items()}}
    types = {"string": pa.string(), "json": pa.string(), "float": pa.float64(), "int": pa.int64(),
             "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))}
    schema = pa.schema([(name, types[kind]) for name, kind in kinds.items()])
    n = 0
    buffer: list[dict] = []
    with pq.ParquetWriter(path, schema) as writer:
        for row in rows:
            flat = {k: (orjson.dumps(row[k]).decode() if kind == "json" and row[k] is not None else row[k])
                    for k, kind in kinds.items()}
            flat["messages"] = [{"role": m.get("role"), "content": m.get("content")} for m in row["messages"]]
            buffer.append(flat)
            n += 1
            if len(buffer) >= BATCH:
                writer.write_table(pa.Table.from_pylist(buffer, schema))
                buffer.clear()
        if buffer:
            writer.write_table(pa.Table.from_pylist(buffer, schema))
    return n

# the find-the-failures stage's columns (cluster, failure score and signals, reward)
from curation.cluster.columns import COLUMNS as _FAILURE_COLUMNS, failure_columns as _failure_columns

COLUMN_PROVIDERS.append((_FAILURE_COLUMNS, _failure_columns))
