"""`curate embed`: embed every conversation that has no vector in this model+view+backend space yet.

Incremental by construction: conversations are read in id order, a chunk at a time, skipping those that already have a
vector, so a rerun on unchanged data reads no messages and loads no model. Memory is bounded by the chunk size.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from curation.config import resolve_fields
from curation.engine import resolve_engine
from curation.errors import ConfigError
from curation.embed.embedder import Embedder, resolve_backend
from curation.embed.vectors import (
    ensure_space, find_space, old_recipe_notice, space_name, vectors_by_hash, write_vectors,
)
from curation.embed.views import DEFAULT_VIEW, View, get_view
from curation.store import Store, loads
from curation.store.embedding_tables import embeddings
from curation.store.tables import conversations, is_traffic


@dataclass
class EmbedSettings:
    """How `curate embed` runs; each field can be set in curate.toml `[embed]` or as `CURATE_EMBED_<NAME>`."""

    model: str | None = field(default=None, metadata={"help": "model name or path (default: bundled all-MiniLM-L6-v2)"})
    backend: str = field(default="auto", metadata={"help": "auto, torch, onnx or openvino (int8 for the last two)"})
    view: str = field(default=DEFAULT_VIEW, metadata={"help": "what text is embedded: thread, last_turn or request"})
    batch_size: int = field(default=16, metadata={"help": "texts per forward pass, torch and openvino (onnx: one)"})
    chunk_size: int = field(default=2_048, metadata={"help": "conversations read, embedded and written per transaction"})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for the backend (default: all cores)"})

    @classmethod
    def resolve(cls, store: Store, **overrides: Any) -> "EmbedSettings":
        """Defaults < curate.toml `[embed]` < `CURATE_EMBED_*` environment < explicit arguments."""
        env = {f.name: f"CURATE_EMBED_{f.name.upper()}" for f in fields(cls)}
        return cls(**resolve_fields(cls, store.home, "embed", env, overrides)[0])


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def embed(
    store: Store,
    model: str | None = None,
    backend: str | None = None,
    view: str | View | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    threads: int | None = None,
    embedder: Embedder | None = None,
    progress: bool | None = None,
    engine: str | None = None,
    address: str | None = None,
) -> dict:
    """Embed the conversations missing from the space; returns {"embedded", "skipped", "model", "seconds", …}.

    `embedder` replaces the one built from `model`/`backend`/`batch_size`/`threads` (any object with `label`,
    `backend_label` and `encode(texts)`). `progress` is tqdm's `disable` inverted: None shows a bar on a terminal.
    `engine="ray"` embeds on the Ray cluster at `address` (curation.engine): one worker per CPU, each with the same
    model, backend, view and batch size, `threads` (default 1) threads each; the summary gains "engine" and "workers".
    """
    started = time.perf_counter()
    chosen_engine = resolve_engine(store, engine, address)
    if chosen_engine.kind == "ray" and embedder is not None:
        raise ConfigError("an embedder object cannot be sent to Ray workers; pass model and backend instead")
    settings = EmbedSettings.resolve(
        store, model=model, backend=backend, view=view if isinstance(view, str) else None,
        batch_size=batch_size, chunk_size=chunk_size, threads=threads,
    )
    chosen_view = get_view(view if view is not None and not isinstance(view, str) else settings.view)
    if embedder is None:
        embedder = Embedder(settings.model, settings.backend, batch_size=settings.batch_size, threads=settings.threads)
    name = space_name(embedder.label, chosen_view.name, embedder.backend_label)
    space = find_space(store, name)
    with store.connect() as conn:  # generated candidates are not traffic: they are rated beside it, never clustered
        total = conn.execute(sa.select(sa.func.count()).select_from(conversations).where(is_traffic())).scalar_one()
    missing = _count_missing(store, space["id"] if space else None, total)
    result = {"embedded": 0, "skipped": total - missing, "model": embedder.label, "seconds": 0.0,
              "backend": embedder.backend_label, "view": chosen_view.name, "space": name, "reused": 0}
    notice = old_recipe_notice(store, embedder.label, chosen_view.name, name)
    if notice:
        result["notice"] = notice
    if missing == 0:  # the common periodic case: no model load, no run row
        result["seconds"] = round(time.perf_counter() - started, 3)
        return result

    with store.run("embed", {"space": name, "batch_size": settings.batch_size, "chunk_size": settings.chunk_size,
                             "engine": chosen_engine.kind}) as run:
        run_id = result["run_id"] = run.id
        run.progress = lambda: result
        space_id = space["id"] if space else None
        if chosen_engine.kind == "ray":
            result.update(_embed_on_ray(store, settings, embedder, chosen_view, name, space_id, missing, run_id,
                                        chosen_engine.address, progress))
        else:
            with tqdm(total=missing, unit="conv", desc="embed", disable=None if progress is None else not progress) as bar:
                for ids, texts in _pending_chunks(store, space_id, chosen_view, settings.chunk_size):
                    space_id, reused = _embed_chunk(store, embedder, chosen_view.name, name, space_id, ids, texts, run_id)
                    result["embedded"] += len(ids)
                    result["reused"] += reused
                    bar.update(len(ids))
        result["seconds"] = round(time.perf_counter() - started, 3)
        return run.finish(result)


def _embed_chunk(store: Store, embedder: Any, view: str, name: str, space_id: int | None, ids: list[str],
                 texts: list[str], run_id: str) -> tuple[int, int]:
    """Embed and write one chunk in one transaction, reusing stored vectors of identical texts; (space id, reused)."""
    hashes = [text_hash(t) for t in texts]
    known = vectors_by_hash(store, space_id, list(set(hashes))) if space_id is not None else {}
    todo = [i for i, h in enumerate(hashes) if h not in known]
    fresh = embedder.encode([texts[i] for i in todo]) if todo else None
    if space_id is None:
        space_id = ensure_space(store, name, embedder.label, view, embedder.backend_label, int(fresh.shape[1]), run_id)
    vectors: list[Any] = [None] * len(ids)
    for row, i in enumerate(todo):
        vectors[i] = fresh[row]
    for i, h in enumerate(hashes):
        if vectors[i] is None:
            vectors[i] = np.frombuffer(known[h], dtype="<f4")
    write_vectors(store, space_id, zip(ids, hashes, vectors), run_id)
    return space_id, len(ids) - len(todo)


@dataclass
class _RayEmbedJob:
    """One Ray worker's part of `embed`: the chunks it is given, embedded as the local loop does (`_embed_chunk`).

    The model and backend come resolved from the driver, so every worker embeds into the driver's space; OpenVINO
    calibrates on the texts the local path would use (the first chunk's), wherever its export is first made.
    """

    model: str
    backend: str
    view: str
    name: str
    batch_size: int
    threads: int
    run_id: str
    calibration: list[str] | None = None
    space_id: int | None = None

    def __call__(self, store: Store, ids: list[str]) -> dict:
        if getattr(self, "embedder_", None) is None:
            self.embedder_ = Embedder(self.model, self.backend, batch_size=self.batch_size, threads=self.threads,
                                      calibration_texts=self.calibration)
        if self.space_id is None:
            self.space_id = (find_space(store, self.name) or {}).get("id")
        view = get_view(self.view)
        with store.connect() as conn:  # the ids still missing: another run may have done some meanwhile
            rows = conn.execute(sa.select(conversations.c.id, conversations.c.messages)
                                .where(conversations.c.id.in_(ids), _missing_clause(self.space_id))
                                .order_by(conversations.c.id)).all()
        if not rows:
            return {"embedded": 0, "reused": 0}
        texts = [view(loads(r[1]) or []) for r in rows]
        self.space_id, reused = _embed_chunk(store, self.embedder_, self.view, self.name, self.space_id,
                                             [r[0] for r in rows], texts, self.run_id)
        return {"embedded": len(rows), "reused": reused}


def _embed_on_ray(store: Store, settings: EmbedSettings, embedder: Embedder, view: View, name: str,
                  space_id: int | None, missing: int, run_id: str, address: str | None, progress: bool | None) -> dict:
    from curation.engine import ray_pool

    backend = resolve_backend(settings.backend)
    calibration = None
    if backend == "openvino" and space_id is None:
        calibration = next(_pending_chunks(store, None, view, settings.chunk_size), (None, None))[1]
    job = _RayEmbedJob(embedder.label, backend, view.name, name, settings.batch_size, settings.threads or 1, run_id,
                       calibration, space_id)
    counts = ray_pool.run(store, job, _missing_clause(space_id), missing, settings.chunk_size, address, "embed", progress)
    return {"embedded": counts.get("embedded", 0), "reused": counts.get("reused", 0), "engine": "ray",
            "workers": counts["workers"]}


def _missing_clause(space_id: int | None) -> sa.ColumnElement[bool]:
    if space_id is None:
        return is_traffic()
    has_vector = sa.select(1).where(embeddings.c.space_id == space_id, embeddings.c.conversation_id == conversations.c.id)
    return sa.and_(is_traffic(), ~sa.exists(has_vector))


def _count_missing(store: Store, space_id: int | None, total: int) -> int:
    if space_id is None:
        return total
    with store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(conversations).where(_missing_clause(space_id))).scalar_one()


def _pending_chunks(store: Store, space_id: int | None, view: View, chunk_size: int):
    """Yield (ids, view texts) of conversations without a vector, in id order, one chunk at a time (keyset paging)."""
    after = None
    while True:
        query = sa.select(conversations.c.id, conversations.c.messages).where(_missing_clause(space_id))
        if after is not None:
            query = query.where(conversations.c.id > after)
        with store.connect() as conn:
            rows = conn.execute(query.order_by(conversations.c.id).limit(chunk_size)).all()
        if not rows:
            return
        after = rows[-1][0]
        yield [r[0] for r in rows], [view(loads(r[1]) or []) for r in rows]
