"""Reading and writing vectors in the store, without loading anything else about the conversations."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import sqlalchemy as sa

from curation.errors import CurateError
from curation.store import Store, insert_ignore, utcnow
from curation.store.embedding_tables import embedding_spaces, embeddings

IN_CHUNK = 500  # ids per IN (…) list: well under SQLite's and PostgreSQL's parameter limits


class NoVectorsError(CurateError):
    """There are no vectors (in the asked-for space) yet."""


def space_name(model: str, view: str, backend: str) -> str:
    return f"{model}|{view}|{backend}"


def old_recipe_notice(store: Store, model: str, view: str, name: str) -> str | None:
    """One line about a space of this model and view written by a recipe no longer used (`OLD_LABELS`), if any."""
    from curation.embed.embedder import OLD_LABELS

    for label, why in OLD_LABELS.items():
        old = find_space(store, space_name(model, view, label))
        if old is not None:
            return (f"space {old['name']!r} was written by an old recipe, whose vectors are batch-dependent: {why}; "
                    f"`curate embed` writes {name!r} instead, which `curate cluster` reads once it is the newest; "
                    f"to re-embed with the same backend, run `curate embed --backend {label.split('-')[0]}`")
    return None


def spaces(store: Store) -> list[dict]:
    """Every embedding space with its vector count, newest first."""
    counts = (
        sa.select(embeddings.c.space_id, sa.func.count().label("vectors")).group_by(embeddings.c.space_id).subquery()
    )
    query = (
        sa.select(embedding_spaces, sa.func.coalesce(counts.c.vectors, 0).label("vectors"))
        .outerjoin(counts, counts.c.space_id == embedding_spaces.c.id)
        .order_by(embedding_spaces.c.updated_at.desc(), embedding_spaces.c.id.desc())
    )
    with store.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def find_space(store: Store, name: str) -> dict | None:
    with store.connect() as conn:
        row = conn.execute(sa.select(embedding_spaces).where(embedding_spaces.c.name == name)).first()
    return dict(row._mapping) if row else None


def ensure_space(store: Store, name: str, model: str, view: str, backend: str, dim: int, run_id: str) -> int:
    """The space's id, creating its row once even when two runs race to create it."""
    now = utcnow()
    values = dict(name=name, model=model, view=view, backend=backend, dim=dim, created_at=now, updated_at=now, run_id=run_id)
    with store.begin() as conn:
        conn.execute(insert_ignore(store, embedding_spaces).values(**values))
        row = conn.execute(sa.select(embedding_spaces.c.id, embedding_spaces.c.dim).where(embedding_spaces.c.name == name)).one()
    if row.dim != dim:
        raise CurateError(f"embedding space {name!r} holds {row.dim}-d vectors but the model gives {dim}-d; "
                          "this model path changed: embed into a new space with --model NEW_PATH")
    return row.id


def write_vectors(store: Store, space_id: int, rows: Iterable[tuple[str, str, np.ndarray]], run_id: str) -> int:
    """Insert (conversation_id, text_hash, vector) rows in one transaction; rows already present are kept."""
    now = utcnow()
    payload = [
        dict(space_id=space_id, conversation_id=cid, text_hash=h, vector=np.asarray(v, dtype="<f4").tobytes(),
             run_id=run_id, embedded_at=now)
        for cid, h, v in rows
    ]
    if not payload:
        return 0
    with store.begin() as conn:
        conn.execute(insert_ignore(store, embeddings), payload)
        conn.execute(embedding_spaces.update().where(embedding_spaces.c.id == space_id).values(updated_at=now, run_id=run_id))
    return len(payload)


def vectors_by_hash(store: Store, space_id: int, hashes: list[str]) -> dict[str, bytes]:
    """Vectors already in the space for these view-text hashes: identical texts are not embedded twice."""
    found: dict[str, bytes] = {}
    with store.connect() as conn:
        for start in range(0, len(hashes), IN_CHUNK):
            chunk = hashes[start : start + IN_CHUNK]
            query = sa.select(embeddings.c.text_hash, embeddings.c.vector).where(
                embeddings.c.space_id == space_id, embeddings.c.text_hash.in_(chunk)
            )
            for text_hash, vector in conn.execute(query):
                found.setdefault(text_hash, vector)
    return found


def load_vectors(store: Store, space: str | None = None, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(conversation ids, float32 matrix of L2-normalised rows) of one embedding space.

    `space` is a name from `spaces()` (`"<model>|<view>|<backend>"`); None means the space written most recently.
    With `ids`, the rows come in that order and ids without a vector are left out; without, all rows sorted by id.
    """
    chosen = _choose_space(store, space)
    dim = chosen["dim"]
    table = embeddings
    base = sa.select(table.c.conversation_id, table.c.vector).where(table.c.space_id == chosen["id"])
    with store.connect() as conn:
        if ids is None:
            return _stream_all(conn, base.order_by(table.c.conversation_id), chosen["id"], dim)
        by_id: dict[str, bytes] = {}
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            by_id.update(conn.execute(base.where(table.c.conversation_id.in_(chunk))).all())
    found = [cid for cid in dict.fromkeys(ids) if cid in by_id]
    matrix = np.empty((len(found), dim), dtype=np.float32)
    for i, cid in enumerate(found):
        matrix[i] = np.frombuffer(by_id[cid], dtype="<f4")
    return found, matrix


def _stream_all(conn: sa.Connection, query: sa.Select, space_id: int, dim: int) -> tuple[list[str], np.ndarray]:
    """Fill a preallocated matrix row by row, so peak memory is the matrix, not the matrix plus every blob."""
    n = conn.execute(sa.select(sa.func.count()).where(embeddings.c.space_id == space_id)).scalar_one()
    matrix = np.empty((n, dim), dtype=np.float32)
    found: list[str] = []
    for cid, vector in conn.execution_options(yield_per=10_000).execute(query):
        if len(found) == n:  # rows written after the count belong to the next reader
            break
        matrix[len(found)] = np.frombuffer(vector, dtype="<f4")
        found.append(cid)
    return found, matrix[: len(found)]


def count_vectors(store: Store, space: str | None = None) -> int:
    """How many vectors one embedding space holds (None: the newest space)."""
    chosen = _choose_space(store, space)
    with store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(embeddings.c.space_id == chosen["id"])).scalar_one()


def iter_vectors(store: Store, space: str | None = None, chunk: int = 32_768,
                 where: sa.ColumnElement | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, float32 matrix) of one embedding space, `chunk` rows at a time in id order, never the whole space at
    once (10M vectors are 15 GB). Each page is its own query on the primary key (keyset paging: `id > last`), so no
    cursor or transaction stays open between pages. `where` filters rows (a condition on `embeddings`)."""
    chosen = _choose_space(store, space)
    dim = chosen["dim"]
    query = sa.select(embeddings.c.conversation_id, embeddings.c.vector).where(embeddings.c.space_id == chosen["id"])
    if where is not None:
        query = query.where(where)
    for rows in _pages(store, query, chunk):
        yield [r[0] for r in rows], np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)


def iter_ids(store: Store, space: str | None = None, chunk: int = 100_000) -> Iterator[list[str]]:
    """The conversation ids of one embedding space, `chunk` at a time, in the order `iter_vectors` yields them."""
    chosen = _choose_space(store, space)
    query = sa.select(embeddings.c.conversation_id).where(embeddings.c.space_id == chosen["id"])
    for rows in _pages(store, query, chunk):
        yield [r[0] for r in rows]


def _pages(store: Store, query: sa.Select, chunk: int) -> Iterator[list[sa.Row]]:
    last = None
    while True:
        page = query if last is None else query.where(embeddings.c.conversation_id > last)
        with store.connect() as conn:
            rows = conn.execute(page.order_by(embeddings.c.conversation_id).limit(chunk)).all()
        if rows:
            yield rows
        if len(rows) < chunk:
            return
        last = rows[-1][0]


def _choose_space(store: Store, space: str | None) -> dict:
    if space is not None:
        found = find_space(store, space)
        if found is None:
            names = ", ".join(s["name"] for s in spaces(store)) or "none yet"
            raise NoVectorsError(f"no embedding space {space!r}; the store has: {names}")
        return found
    every = spaces(store)
    if not every:
        raise NoVectorsError("no vectors in the store yet; run `curate embed` first")
    return every[0]
