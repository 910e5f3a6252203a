"""Import: ratings made elsewhere (a spreadsheet, a HelpSteer2-style CSV, another tool's export), stored like pulled ones.

Input: JSONL, CSV (a UTF-8 byte order mark is fine) or Parquet, one rating per row: `conversation_id`, any of the
five HelpSteer2 attributes (integers 0–4, blank or missing allowed), an optional `annotator` and `rated_at` (ISO 8601).

A rating becomes a submitted response of the record a push would have made for the conversation
(`annotations.push.record_id`), so the consensus (`ratings`), the agreement figures, the exports and the failure model
read it like a pulled one, and an annotator rated both in Argilla and in the file counts once. The conversation
becomes part of the dataset (`annotation_records`, strategy "import", unless pushed already), so it is not routed
for rating again. Provenance: every row written points at the import's run (`runs.kind` "import", its params name
the file and the source "import:<file name>", see `imported_runs`); a row without an annotator gets the one given,
else "import:<file name>". Annotator names keep their meaning elsewhere: `simulated-annotator-N` stays simulated.

The same (conversation, annotator) with the same values is a duplicate (counted, nothing written); with other values
it is a conflict. Rejected rows go to `<home>/quarantine/import-<run id>.jsonl` with file, line and reason. Everything
valid in a file is committed in one transaction, so importing it again adds nothing.
"""
from __future__ import annotations

import csv
import math
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import orjson
import sqlalchemy as sa

from annotations.agreement import agreement
from annotations.pull import submitted_responses, write_responses
from annotations.push import record_id
from annotations.tables import annotation_records, rating_responses
from annotations.template import ATTRIBUTES
from curation.errors import InputError
from curation.home import open_private
from curation.ingest.readers import JSONL_SUFFIXES, Item, read_jsonl, read_parquet
from curation.store import Store, existing_ids, insert_rows, loads, utcnow
from curation.store.tables import conversations, runs

KIND = "import"  # the runs.kind of an import, and the annotation_records.strategy of the records it created
CHUNK = 5_000  # ids per IN (…) query
MAX_NAME = 200  # annotation_records.conversation_id and rating_responses.annotator are String(200)
MAX_FIELD = 16 << 20  # characters in one CSV field: a long text in a column the import ignores is fine


def import_ratings(store: Store, path: str | Path, dataset: str, *, workspace: str | None = None,
                   annotator: str | None = None) -> dict:
    """Store the ratings in `path` as submitted responses of `dataset`; returns the summary `curate annotate import
    --json` prints: {"imported", "duplicates", "quarantined", "quarantine_file", "read", "conversations", "dataset",
    "file", "source", "agreement", "run_id"}. `read == imported + duplicates + quarantined`.

    `annotator` names the rater of rows that do not name one (default "import:<file name>"). `workspace` is
    recorded with the run only: an import writes to the store, never to Argilla.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a .jsonl, .csv or .parquet file of ratings")
    source = f"{KIND}:{path.name}"
    default_annotator = annotator or source
    items = list(_read(path))
    with store.run(KIND, {"file": str(path.resolve()), "source": source, "dataset": dataset,
                          "workspace": workspace, "annotator": annotator}) as run:
        run_id = run.id
        rejected: list[tuple[Item, str]] = []
        candidates = []
        for item in items:
            rating, reason = _parse(item, default_annotator)
            if reason:
                rejected.append((item, reason))
            else:
                candidates.append((item, rating))
        with store.begin() as conn:
            rows, records, duplicates, refused = _resolve(conn, candidates, dataset, run_id)
            rejected.extend(refused)
            insert_rows(conn, annotation_records, records)  # a record pushed (or imported) before is kept as it is
            if rows:
                write_responses(conn, rows, dataset, run_id)
        quarantine = _quarantine(store, run_id, sorted(rejected, key=lambda r: r[0].line))
        summary = {"imported": len(rows), "duplicates": duplicates, "quarantined": len(rejected),
                   "quarantine_file": str(quarantine) if quarantine else None, "read": len(items),
                   "conversations": len({r["conversation_id"] for r in rows}), "new_records": len(records),
                   "dataset": dataset, "file": str(path), "source": source, "run_id": run_id}
        run.finish(summary)
    # the ratings are committed and the run is done when the block ends: agreement comes after, whatever happens to it
    return {**summary, "agreement": agreement(submitted_responses(store, dataset))}


def imported_runs(conn: sa.Connection) -> dict[str, str]:
    """run id → source ("import:<file name>") of every finished import: rows whose `run_id` is one were imported."""
    found = conn.execute(sa.select(runs.c.id, runs.c.params).where(runs.c.kind == KIND, runs.c.status == "done"))
    return {run: (loads(params) or {}).get("source", KIND) for run, params in found}


# reading ---------------------------------------------------------------------------------------------------------

def _read(path: Path) -> Iterator[Item]:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return read_jsonl(str(path))
    if name.endswith(".csv"):
        return _read_csv(path)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            columns = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:  # pyarrow raises several types for a bad file; InputError says which file
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from None
        _check_columns(path, columns)
        return read_parquet(str(path))
    raise InputError(f"{path}: unknown file type; give ratings as .jsonl, .csv or .parquet")


def _read_csv(path: Path) -> Iterator[Item]:
    """Rows of a CSV file with a header line, as items numbered by the file line each row starts on."""
    limit = csv.field_size_limit()
    if limit < MAX_FIELD:  # the csv module's default, 131,072, refuses a whole file for one long comment
        csv.field_size_limit(MAX_FIELD)
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte order mark is skipped
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader, [])]
            _check_columns(path, header)
            line = reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    raw = orjson.dumps(cells)
                    if len(cells) != len(header):
                        yield Item(str(path), line, raw, None, f"malformed row: {len(cells)} fields where the header "
                                                              f"has {len(header)}; quote values that hold commas")
                    else:
                        yield Item(str(path), line, raw, dict(zip(header, cells)))
                line = reader.line_num + 1
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: invalid UTF-8 near line {reader.line_num + 1} ({exc.reason}); "
                             "save the file as UTF-8 CSV") from None
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: unreadable CSV ({exc}); save it as plain CSV") from None


def _check_columns(path: Path, columns: list[str]) -> None:
    if "conversation_id" not in columns:
        raise InputError(f"{path}: no conversation_id column (columns: {', '.join(columns) or 'none'}); "
                         "name the column that holds Curate's conversation ids conversation_id")
    if not set(ATTRIBUTES) & set(columns):
        raise InputError(f"{path}: no rating column; name at least one column {', '.join(ATTRIBUTES)}")


# checking --------------------------------------------------------------------------------------------------------

def _parse(item: Item, default_annotator: str) -> tuple[dict | None, str | None]:
    """The rating in one row, or the reason it cannot be used."""
    if item.error:
        return None, item.error
    obj = item.obj
    if not isinstance(obj, dict):
        return None, "malformed row: a rating is a JSON object with conversation_id and attributes"
    conversation = obj.get("conversation_id")
    if isinstance(conversation, int) and not isinstance(conversation, bool):
        conversation = str(conversation)
    if not isinstance(conversation, str) or not conversation.strip():
        return None, "no conversation_id; give the id of the rated conversation as Curate stores it"
    conversation = conversation.strip()
    values: dict[str, int | None] = {}
    for name in ATTRIBUTES:
        values[name], problem = _score(obj.get(name))
        if problem:
            return None, f"{name} {problem}; ratings are whole numbers 0–4 (blank when not rated)"
    if all(v is None for v in values.values()):
        return None, f"no rating: none of {', '.join(ATTRIBUTES)} has a value; give at least one (0–4)"
    annotator = obj.get("annotator")
    annotator = annotator.strip() if isinstance(annotator, str) and annotator.strip() else default_annotator
    if len(annotator) > MAX_NAME or len(conversation) > MAX_NAME:
        return None, f"conversation_id or annotator longer than {MAX_NAME} characters; shorten it"
    rated_at, problem = _time(obj.get("rated_at"))
    if problem:
        return None, problem
    return {"conversation_id": conversation, "annotator": annotator, "values": values, "rated_at": rated_at}, None


def _score(value: Any) -> tuple[int | None, str | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, float) and math.isnan(value):  # Parquet written by pandas: a blank in a float column
        return None, None
    if isinstance(value, bool):
        return None, f"{value!r} is not an integer"
    number, shown = value, repr(value)
    if isinstance(value, Decimal):  # a Parquet decimal column
        number, shown = float(value), str(value)
    if isinstance(value, str):
        try:
            number, shown = float(value.strip()), value.strip()  # a CSV cell: shown as written, without quotes
        except ValueError:
            return None, f"{value!r} is not an integer"
    if not isinstance(number, (int, float)) or not math.isfinite(number) or number != int(number):
        return None, f"{shown} is not an integer"
    if not 0 <= number <= 4:
        return None, f"{shown} is outside 0–4"
    return int(number), None


def _time(value: Any) -> tuple[str | None, str | None]:
    """rated_at as the store's UTC timestamp text (a time without a zone is taken as UTC)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    try:
        when = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None, f"rated_at {value!r} is not an ISO 8601 time; write it like 2024-05-01T12:00:00Z, or leave it blank"
    try:
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+05:00 is in year 0 in UTC
        return None, f"rated_at {value!r} falls outside the years 1–9999 in UTC; give the time it was rated"
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), None


def _resolve(conn: sa.Connection, candidates: list[tuple[Item, dict]], dataset: str,
             run_id: str) -> tuple[list[dict], list[dict], int, list[tuple[Item, str]]]:
    """Rows to write, records to add, duplicates, and the rows refused against what the store (and the file) holds."""
    ids = sorted({r["conversation_id"] for _, r in candidates})
    known = existing_ids(conn, conversations.c.id, ids)
    elsewhere = _datasets_elsewhere(conn, ids, dataset)
    stored = _stored(conn, dataset, sorted({f"{record_id(r['conversation_id'])}:{r['annotator']}"
                                              for _, r in candidates}))
    taken: dict[str, tuple[int | None, dict]] = {key: (None, row) for key, row in stored.items()}
    rows, records, refused, duplicates = [], {}, [], 0
    now = utcnow()
    for item, rating in candidates:
        conversation, annotator = rating["conversation_id"], rating["annotator"]
        if conversation not in known:
            refused.append((item, f"unknown conversation id {conversation!r}: not in the store; ingest the "
                                  "conversation first, or correct the id"))
            continue
        if conversation in elsewhere:
            refused.append((item, f"conversation {conversation!r} is in dataset {elsewhere[conversation]!r} already "
                                  f"(a conversation is rated in one dataset); import it with --dataset "
                                  f"{elsewhere[conversation]}"))
            continue
        record = record_id(conversation)
        key = f"{record}:{annotator}"
        if key in taken:
            line, before = taken[key]
            if before.get("status", "submitted") == "submitted" and _same(before, rating["values"]):
                duplicates += 1
            else:
                where = f"line {line} of this file" if line is not None else f"the store ({before.get('status')})"
                refused.append((item, f"conflict: conversation {conversation!r}, annotator {annotator!r} is rated "
                                      f"{_show(before)} in {where}, and {_show(rating['values'])} here; keep one "
                                      "rating per conversation and annotator, or give this one another annotator"))
            continue
        row = {"id": key, "dataset": dataset, "record_id": record, "conversation_id": conversation,
               "conversation_id_b": None, "annotator": annotator, "status": "submitted", **rating["values"],
               "preference": None, "justification": None, "rewrite": None, "updated_at": rating["rated_at"],
               "pulled_at": now, "run_id": run_id}
        taken[key] = (item.line, row)
        rows.append(row)
        records.setdefault(record, {"record_id": record, "dataset": dataset, "conversation_id": conversation,
                                    "conversation_id_b": None, "priority": None, "strategy": KIND,
                                    "pushed_at": now, "run_id": run_id})
    return rows, list(records.values()), duplicates, refused


def _datasets_elsewhere(conn: sa.Connection, ids: list[str], dataset: str) -> dict[str, str]:
    a = annotation_records.c
    found: dict[str, str] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        found.update(conn.execute(sa.select(a.conversation_id, a.dataset)
                                  .where(a.conversation_id.in_(chunk), a.dataset != dataset)).all())
    return found


def _stored(conn: sa.Connection, dataset: str, keys: list[str]) -> dict[str, dict]:
    r = rating_responses.c
    found: dict[str, dict] = {}
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        for row in conn.execute(sa.select(r.id, r.status, *(getattr(r, n) for n in ATTRIBUTES))
                                .where(r.dataset == dataset, r.id.in_(chunk))):
            found[row.id] = dict(row._mapping)
    return found


def _same(before: dict, values: dict) -> bool:
    return all((before.get(n) is None and values[n] is None)
               or (before.get(n) is not None and values[n] is not None and float(before[n]) == values[n])
               for n in ATTRIBUTES)


def _show(values: dict) -> str:
    shown = [f"{n} {values[n]:g}" for n in ATTRIBUTES if values.get(n) is not None]
    return ", ".join(shown) or "with no attribute"


def _quarantine(store: Store, run_id: str, rejected: list[tuple[Item, str]]) -> Path | None:
    """Write the rejected rows the way ingest does (file, line, reason, raw), 0600; None when there are none."""
    if not rejected:
        return None
    path = store.quarantine_dir / f"{KIND}-{run_id}.jsonl"
    with open_private(path) as out:
        for item, reason in rejected:
            out.write(orjson.dumps({"file": item.source, "line": item.line, "reason": reason,
                                    "raw": item.raw.decode("utf-8", "backslashreplace")}) + b"\n")
    return path
