"""The judge's rows in the store (`judgements`, migration 0008): writing them, and reading them back as evidence.

Judge ratings are stored apart from people's. They are never counted in agreement between people, never exported
as human preferences, and never used as the failure model's labels; readers take them from here, by name.
"""
from __future__ import annotations

from typing import Any, Iterable

import sqlalchemy as sa

from curation.store import among, insert_rows
from curation.store.judge_tables import ATTRIBUTES, judgements

OK = "ok"


def latest_judgements(conn: sa.Connection, ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """{conversation_id: {attribute: 0–4 for each of ATTRIBUTES, "model", "rubric_version", "rationale", "judged_at"}}
    for every conversation (or those of `ids`) with a judgement: its newest, whichever model and rubric wrote it."""
    columns = [judgements.c.conversation_id, *(judgements.c[a] for a in ATTRIBUTES), judgements.c.model,
               judgements.c.rubric_version, judgements.c.rationale, judgements.c.judged_at]
    query = sa.select(*columns).where(judgements.c.status == OK)
    out: dict[str, dict[str, Any]] = {}
    wanted = None if ids is None else list(dict.fromkeys(ids))
    chunks = [None] if wanted is None else [wanted[i : i + 5_000] for i in range(0, len(wanted), 5_000)]
    for chunk in chunks:
        q = query if chunk is None else query.where(among(judgements.c.conversation_id, chunk, conn))
        for row in conn.execute(q).mappings():
            seen = out.get(row["conversation_id"])
            if seen is None or (row["judged_at"], row["model"]) > (seen["judged_at"], seen["model"]):
                out[row["conversation_id"]] = {k: row[k] for k in row.keys() if k != "conversation_id"}
    return out


def judged_keys(conn: sa.Connection, ids: list[str], rubric_version: str) -> dict[tuple[str, str], set[str]]:
    """{(conversation_id, content_hash): {models}} of the judgements under `rubric_version` for `ids`."""
    out: dict[tuple[str, str], set[str]] = {}
    for start in range(0, len(ids), 5_000):
        chunk = ids[start : start + 5_000]
        rows = conn.execute(sa.select(judgements.c.conversation_id, judgements.c.content_hash, judgements.c.model)
                            .where(among(judgements.c.conversation_id, chunk, conn),
                                   judgements.c.rubric_version == rubric_version, judgements.c.status == OK))
        for cid, content_hash, model in rows:
            out.setdefault((cid, content_hash), set()).add(model)
    return out


def write_judgements(conn: sa.Connection, rows: list[dict]) -> None:
    """Insert-or-ignore: a judgement an overlapping run wrote first stays."""
    insert_rows(conn, judgements, rows)
