"""Pull: bring annotators' responses home, raw and as a per-record consensus, with agreement statistics.

From the embedded server, a pull reads only the responses changed since the last pull, through its responses
endpoint (annotations/server/responses.py). From a stock Argilla server, it reads the records API as JSON
(`GET /datasets/{id}/records?include=responses`), not the SDK's Record objects: SDK 2.8.0 crashes on a discarded
response whose values are null, and would lose the page it is on. Each page is one store transaction, and a
response is written only when it is new or its server-side `updated_at` changed, so a pull cut off anywhere is
finished by running it again, and a rerun stores nothing twice.
"""
from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator

import sqlalchemy as sa
from tqdm import tqdm

from annotations.agreement import agreement, consensus
from annotations.client import AnnotationError, Connection, RefusedRequest, connect, map_error
from annotations.push import DEFAULT_WORKSPACE
from annotations.tables import annotation_records, annotation_sync, rating_responses, ratings
from annotations.template import ATTRIBUTES, PREFERENCE
from curation.disk import disk_full_message
from curation.errors import CurateError, StoreError
from curation.store import Store, dumps, utcnow

PAGE = 1000  # the records API's largest page
RESPONSES_PAGE = 5_000  # responses per page of the embedded server's responses endpoint
# A pull asks for responses changed since the newest one it stored, minus this margin: a response whose
# transaction began earlier may commit after that one. Re-read responses are recognised and not stored twice.
SINCE_MARGIN = timedelta(minutes=10)
STATUSES = ("submitted", "discarded", "draft")


def pull(store: Store, dataset: str, *, workspace: str | None = None, connection: Connection | None = None,
         progress: bool | None = None) -> dict:
    """Store new and changed responses of `dataset`; returns {"pulled", "responses", "agreement", …}.

    `pulled`: records with a new or changed response; `responses`: new or changed submitted responses
    (one per record per annotator); `agreement`: over all submitted responses of the dataset in the store.
    """
    stored = [0]  # responses committed so far, for the message when the store goes away mid-pull
    try:
        with store.run("pull", {"dataset": dataset}) as run:
            run_id = run.id
            conn = connection or connect(home=store.home)
            dataset_id = _dataset_id(conn, dataset, workspace or DEFAULT_WORKSPACE)
            users = _usernames(conn)
            pushed = _pushed(store, dataset)
            seen = _seen(store, dataset)
            since = _since(store, dataset) if seen else None  # an empty store side reads everything
            pulled, submitted, changed_records, newest = 0, 0, set(), None
            unknown: dict[str, str] = {}  # external id of a record Curate did not push -> its oldest response time
            with tqdm(desc=f"pull {dataset}", unit="resp", disable=None if progress is None else not progress) as bar:
                for items, total in _pages(conn, dataset_id, since):
                    bar.total = total
                    rows = _changed_rows(items, users, pushed, seen, dataset, run_id, unknown)
                    if rows:
                        _write(store, rows, dataset, run_id)
                        stored[0] += len(rows)
                        for row in rows:
                            seen[row["id"]] = row["updated_at"]
                            changed_records.add(row["record_id"])
                            submitted += row["status"] == "submitted"
                            newest = max(newest or "", row["updated_at"] or "")
                    bar.update(len(items))
            pulled = len(changed_records)
            # the next pull must reach back to responses it skipped: their record may be recorded as pushed by then
            # (a push cut off after the server stored a batch records it on resume)
            _mark_synced(store, dataset, newest, run_id, cap=min(unknown.values(), default=None))
            stats = agreement(submitted_responses(store, dataset))
            result = {"pulled": pulled, "responses": submitted, "agreement": stats, "dataset": dataset,
                      "unknown_records": len(unknown), "run_id": run_id}
            run.finish({k: v for k, v in result.items() if k != "agreement"})
            return result
    except sa.exc.SQLAlchemyError as exc:  # the store, not the server (the server is only spoken to over HTTP)
        if disk_full_message(exc) is not None:
            raise  # the command says which disk
        raise StoreError(store_unavailable(store, dataset, stored[0], exc)) from exc
    except Exception as exc:  # recorded as failed by store.run; its committed batches stay
        if isinstance(exc, CurateError):
            raise
        raise map_error(exc, getattr(connection, "url", "ARGILLA_API_URL")) from exc


def store_unavailable(store: Store, dataset: str, stored: int, exc: BaseException) -> str:
    """One line for a store that failed under a pull: which store, why, what is kept, and that a rerun finishes it.
    Each page is one transaction, so the page being written is either all in or not at all."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
    where = store.engine.url.render_as_string(hide_password=True)
    return (f"the Curate store at {where} failed during the pull ({reason}); the {stored} responses stored before "
            f"it are kept and nothing of the page it was writing; run `curate annotate pull --dataset {dataset}` "
            "again once the store is back: it stores only what is missing")


def _pages(conn: Connection, dataset_id: str, since: datetime | None) -> Iterator[tuple[list[dict], int | None]]:
    """Pages of records with responses, as ({"external_id", "responses"} items, total or None).

    The embedded server answers with the responses changed since `since` (annotations/server/responses.py); a
    stock Argilla server does not know that endpoint, and its records listing is read whole instead.
    """
    path = f"/api/v1/curate/datasets/{dataset_id}/responses"
    params: dict[str, Any] = {"limit": RESPONSES_PAGE}
    if since is not None:
        params["since"] = since.isoformat()
    try:
        page = conn.request("GET", path, params=params)
    except RefusedRequest as exc:
        if exc.status_code not in (404, 405):
            raise
        yield from _record_pages(conn, dataset_id)
        return
    while True:
        yield [{"external_id": r["external_id"], "responses": [r]} for r in page["items"]], None
        if not page.get("next"):
            return
        page = conn.request("GET", path, params={**params, "after": page["next"]})


def _record_pages(conn: Connection, dataset_id: str) -> Iterator[tuple[list[dict], int | None]]:
    offset = 0
    while True:
        page = conn.request("GET", f"/api/v1/datasets/{dataset_id}/records",
                            params={"include": "responses", "offset": offset, "limit": PAGE})
        yield page["items"], page.get("total")
        offset += len(page["items"])
        if len(page["items"]) < PAGE:
            return


def _since(store: Store, dataset: str) -> datetime | None:
    with store.connect() as conn:
        newest = conn.execute(
            sa.select(annotation_sync.c.responses_since).where(annotation_sync.c.dataset == dataset)).scalar()
    try:
        return datetime.fromisoformat(newest) - SINCE_MARGIN if newest else None
    except ValueError:
        return None


def _dataset_id(conn: Connection, name: str, workspace: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK warns before returning None; our error says more
            found = conn.client.datasets(name=name, workspace=workspace)
    except Exception as exc:  # mapped once, here
        raise map_error(exc, conn.url) from exc
    if found is None:
        raise AnnotationError(f"no dataset {name!r} in workspace {workspace!r} at {conn.url}; push to it first")
    return str(found.id)


def _usernames(conn: Connection) -> dict[str, str]:
    """user id → username; an annotator who cannot be listed (a non-owner key) keeps their id as name."""
    try:
        return {u["id"]: u["username"] for u in conn.request("GET", "/api/v1/users")["items"]}
    except AnnotationError:
        return {}


def _pushed(store: Store, dataset: str) -> dict[str, tuple[str, str | None]]:
    a = annotation_records.c
    with store.connect() as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            sa.select(a.record_id, a.conversation_id, a.conversation_id_b).where(a.dataset == dataset))}


def _seen(store: Store, dataset: str) -> dict[str, str | None]:
    r = rating_responses.c
    with store.connect() as conn:
        return dict(conn.execute(sa.select(r.id, r.updated_at).where(r.dataset == dataset)).all())


def _changed_rows(items: list[dict], users: dict[str, str], pushed: dict, seen: dict, dataset: str,
                  run_id: str, unknown: dict[str, str]) -> list[dict]:
    """Rows for the responses that are new or changed; responses of records Curate did not push go to `unknown`."""
    now = utcnow()
    rows = []
    for item in items:
        responses = item.get("responses") or []
        if not responses:
            continue
        record = item.get("external_id")
        if record not in pushed:
            # a record that Curate did not push (added by hand in the UI, or another tool), or not recorded yet
            times = [r.get("updated_at") or "" for r in responses] + [unknown.get(record, "~")]
            unknown[record] = min(times)
            continue
        conversation_id, conversation_id_b = pushed[record]
        for response in responses:
            annotator = users.get(response["user_id"], response["user_id"])
            row_id = f"{record}:{annotator}"
            updated_at = response.get("updated_at")
            if row_id in seen and seen[row_id] == updated_at:
                continue
            rows.append({
                "id": row_id, "dataset": dataset, "record_id": record, "conversation_id": conversation_id,
                "conversation_id_b": conversation_id_b, "annotator": annotator,
                "status": response.get("status") if response.get("status") in STATUSES else "draft",
                **_values(response.get("values") or {}),
                "updated_at": updated_at, "pulled_at": now, "run_id": run_id,
            })
    return rows


def _values(values: dict[str, Any]) -> dict[str, Any]:
    """The response's answers as columns; anything missing or malformed is NULL."""

    def value(name: str) -> Any:
        entry = values.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    out: dict[str, Any] = {}
    for name in ATTRIBUTES:
        v = value(name)
        out[name] = float(v) if isinstance(v, (int, float)) else None
    try:
        out["preference"] = int(value(PREFERENCE))
    except (TypeError, ValueError):
        out["preference"] = None
    for name in ("justification", "rewrite"):
        v = value(name)
        out[name] = v if isinstance(v, str) and v.strip() else None
    return out


def _write(store: Store, rows: list[dict], dataset: str, run_id: str) -> None:
    """Upsert the raw responses and recompute the consensus of the records they touch, in one transaction."""
    with store.begin() as conn:
        write_responses(conn, rows, dataset, run_id)


def write_responses(conn: sa.Connection, rows: list[dict], dataset: str, run_id: str) -> None:
    """`_write` inside the caller's transaction (`annotations.rating_import` commits a whole file in one)."""
    records = sorted({r["record_id"] for r in rows})
    _upsert(conn, rating_responses, rows, "id")
    current = _submitted_rows(conn, dataset, records)
    by_record: dict[str, list[dict]] = {}
    for r in current:
        by_record.setdefault(r["record_id"], []).append(r)
    now = utcnow()
    consensus_rows = []
    for record, responses in by_record.items():
        c = consensus(responses)
        consensus_rows.append({
            "record_id": record, "dataset": dataset, "conversation_id": responses[0]["conversation_id"],
            "conversation_id_b": responses[0]["conversation_id_b"], "n_annotators": c["n_annotators"],
            **{name: c[name] for name in ATTRIBUTES}, "preference": c["preference"],
            "disagreement": c["disagreement"], "annotators": dumps(sorted(r["annotator"] for r in responses)),
            "run_id": run_id, "updated_at": now,
        })
    # a record whose only submitted response was withdrawn (now discarded or draft) has no consensus
    gone = [r for r in records if r not in by_record]
    for start in range(0, len(gone), 5_000):
        conn.execute(ratings.delete().where(ratings.c.record_id.in_(gone[start : start + 5_000])))
    _upsert(conn, ratings, consensus_rows, "record_id")


def _submitted_rows(conn: sa.Connection, dataset: str, records: list[str]) -> list[dict]:
    r = rating_responses.c
    out = []
    for start in range(0, len(records), 5_000):
        chunk = records[start : start + 5_000]
        out.extend(dict(row._mapping) for row in conn.execute(
            sa.select(rating_responses).where(r.dataset == dataset, r.status == "submitted", r.record_id.in_(chunk))))
    return out


def submitted_responses(store: Store, dataset: str) -> Iterable[dict]:
    """Every submitted response of `dataset` in the store: what the agreement figures are computed over."""
    r = rating_responses.c
    with store.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(
            sa.select(r.record_id, r.annotator, *(getattr(r, n) for n in ATTRIBUTES))
            .where(r.dataset == dataset, r.status == "submitted"))]


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict], key: str) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[key], set_={c: statement.excluded[c] for c in rows[0] if c != key}
    )
    for start in range(0, len(rows), 2_000):
        conn.execute(statement, rows[start : start + 2_000])


def _mark_synced(store: Store, dataset: str, newest: str | None, run_id: str, cap: str | None = None) -> None:
    """Remember the newest response time stored, but no later than `cap` (the oldest response left unstored)."""
    with store.begin() as conn:
        previous = conn.execute(
            sa.select(annotation_sync.c.responses_since).where(annotation_sync.c.dataset == dataset)).scalar()
        since = max(previous or "", newest or "") or None
        if cap:
            since = min(since or cap, cap)
        values = {"dataset": dataset, "responses_since": since, "pulled_at": utcnow(), "run_id": run_id}
        _upsert(conn, annotation_sync, [values], "dataset")


def status(store: Store, dataset: str, *, workspace: str | None = None, connection: Connection | None = None) -> dict:
    """Progress of `dataset`: the server's record counts per status and per annotator, and what the store holds.

    {"total", "completed", "pending", "annotators": {name: {"submitted", "discarded", "draft"}}, "store": {…}}.
    When the server cannot be reached, the server's figures are None and "server_error" says why.
    """
    out: dict[str, Any] = {"dataset": dataset, "total": None, "completed": None, "pending": None, "annotators": {}}
    try:
        conn = connection or connect(home=store.home, retries=1)
        dataset_id = _dataset_id(conn, dataset, workspace or DEFAULT_WORKSPACE)
        progress = conn.request("GET", f"/api/v1/datasets/{dataset_id}/progress")
        users = conn.request("GET", f"/api/v1/datasets/{dataset_id}/users/progress")["users"]
        out.update(total=progress["total"], completed=progress["completed"], pending=progress["pending"])
        for user in users:
            counts = {s: 0 for s in STATUSES}
            for part in ("completed", "pending"):
                for s, n in (user.get(part) or {}).items():
                    counts[s] = counts.get(s, 0) + (n or 0)
            out["annotators"][user["username"]] = counts
        out["url"] = conn.url
    except AnnotationError as exc:
        out["server_error"] = str(exc)
    out["store"] = _store_status(store, dataset)
    return out


def _store_status(store: Store, dataset: str) -> dict:
    r, g = rating_responses.c, ratings.c
    with store.connect() as conn:
        pushed = conn.execute(sa.select(sa.func.count()).where(annotation_records.c.dataset == dataset)).scalar_one()
        by_annotator: dict[str, dict[str, int]] = {}
        for annotator, state, n in conn.execute(
            sa.select(r.annotator, r.status, sa.func.count()).where(r.dataset == dataset).group_by(r.annotator, r.status)
        ):
            by_annotator.setdefault(annotator, {s: 0 for s in STATUSES})[state] = n
        rated, flagged = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(g.disagreement), 0)).where(g.dataset == dataset)
        ).one()
        last_pull = conn.execute(sa.select(annotation_sync.c.pulled_at).where(annotation_sync.c.dataset == dataset)).scalar()
    return {"pushed": pushed, "rated": rated, "disagreement": int(flagged), "annotators": by_annotator,
            "last_pull": last_pull}
