"""`curate embed` on real oasst1 threads with the real bundled model: incremental, per space, vectors readable alone."""
from __future__ import annotations

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from curation.embed import Embedder, NoVectorsError, embed, load_vectors, spaces
from curation.embed.views import last_turn, request, thread
from curation.store import Store, dumps, utcnow
from curation.store.embedding_tables import embeddings
from curation.store.tables import conversations

N_THREADS = 40


def oasst_threads(path, limit: int) -> list[tuple[str, list[dict]]]:
    """(id, OpenAI messages) of the root → assistant-message paths of the real oasst1 trees, first `limit`."""
    by_id = {}
    for line in open(path, encoding="utf-8"):
        obj = orjson.loads(line)
        by_id[obj["message_id"]] = obj
    out = []
    for mid, obj in by_id.items():
        if obj["role"] != "assistant":
            continue
        path, node = [], obj
        while node is not None:
            path.append({"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]})
            node = by_id.get(node["parent_id"]) if node["parent_id"] else None
        out.append((mid, path[::-1]))
        if len(out) == limit:
            break
    return out


def insert(store: Store, threads: list[tuple[str, list[dict]]]) -> None:
    with store.begin() as conn:
        conn.execute(
            conversations.insert(),
            [dict(id=cid, messages=dumps(msgs), n_messages=len(msgs), ingested_at=utcnow()) for cid, msgs in threads],
        )


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """One torch model for the module: loading it is most of the cost of a small test."""
    return Embedder(backend="torch")


@pytest.fixture
def threads(oasst_file):
    return oasst_threads(oasst_file, N_THREADS)


def test_views_pick_last_turn_and_clip(threads):
    _, messages = next(t for t in threads if len(t[1]) >= 4)
    text = last_turn(messages)
    assert text.startswith(" ".join(messages[-2]["content"].split())[:50])
    assert " ".join(messages[-1]["content"].split())[:50] in text
    assert messages[0]["content"][:50] not in text or messages[0]["content"] == messages[-2]["content"]
    assert len(text) <= 500 + 1 + 700
    assert len(thread(messages)) <= 1_500
    assert " ".join(messages[0]["content"].split())[:40] in thread(messages)
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url"}]},
             {"role": "assistant", "content": "hi there"}]
    assert last_turn(parts) == "hello\nhi there"
    assert last_turn([{"role": "system", "content": "only a system prompt"}]) == "only a system prompt"
    assert request(messages) == " ".join(messages[-2]["content"].split())[: len(request(messages))]
    assert messages[-1]["content"][:50] not in request(messages) and len(request(messages)) <= 1_200
    assert request(parts) == "hello"


def test_embed_is_incremental_and_vectors_load_alone(store, threads, embedder):
    insert(store, threads[:30])
    first = embed(store, embedder=embedder, progress=False)
    assert first["embedded"] == 30 and first["skipped"] == 0
    assert first["model"] == "all-MiniLM-L6-v2" and first["space"] == "all-MiniLM-L6-v2|thread|torch"  # the default view

    again = embed(store, embedder=embedder, progress=False)
    assert again["embedded"] == 0 and again["skipped"] == 30
    assert again["seconds"] < max(0.5, 0.02 * first["seconds"])

    insert(store, threads[30:])
    third = embed(store, embedder=embedder, progress=False)
    assert third["embedded"] == N_THREADS - 30 and third["skipped"] == 30

    ids, X = load_vectors(store)
    assert ids == sorted(cid for cid, _ in threads)
    assert X.dtype == np.float32 and X.shape == (N_THREADS, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # the stored vector is the model's embedding of the view text
    cid, messages = threads[3]
    expected = embedder.encode([thread(messages)])[0]
    assert float(X[ids.index(cid)] @ expected) > 0.9999

    wanted = [threads[5][0], "no-such-id", threads[1][0]]
    got_ids, got = load_vectors(store, ids=wanted)
    assert got_ids == [threads[5][0], threads[1][0]]
    np.testing.assert_array_equal(got[0], X[ids.index(threads[5][0])])
    with store.connect() as conn:
        runs = {r for (r,) in conn.execute(sa.select(embeddings.c.run_id).distinct())}
    assert first["run_id"] in runs and third["run_id"] in runs


def test_a_store_embedded_before_the_default_view_changed_keeps_working(store, threads, embedder):
    """Stores embedded with the old default (last_turn) still cluster; the next embed adds the thread space and
    cluster moves to it (the newest space) with a refit, while --space still reads the old one."""
    from curation.cluster import cluster

    insert(store, threads)
    embed(store, embedder=embedder, view="last_turn", progress=False)
    old = cluster(store, k=3, progress=False)
    assert old["space"] == "all-MiniLM-L6-v2|last_turn|torch" and old["assigned"] == N_THREADS
    assert embed(store, embedder=embedder, progress=False)["space"] == "all-MiniLM-L6-v2|thread|torch"
    new = cluster(store, k=3, progress=False)
    assert new["space"] == "all-MiniLM-L6-v2|thread|torch" and new["refit"] and new["assigned"] == N_THREADS
    back = cluster(store, k=3, space="all-MiniLM-L6-v2|last_turn|torch", progress=False)
    assert back["space"] == "all-MiniLM-L6-v2|last_turn|torch" and back["assigned"] == N_THREADS


def test_identical_texts_are_embedded_once(store, threads, embedder):
    cid, messages = threads[0]
    insert(store, [(cid, messages), ("copy-a", messages), ("copy-b", messages)])
    result = embed(store, embedder=embedder, progress=False, chunk_size=2)
    assert result["embedded"] == 3 and result["reused"] == 1  # within a chunk by Embedder, across chunks by hash
    ids, X = load_vectors(store)
    assert len(ids) == 3
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_array_equal(X[1], X[2])


def test_each_view_is_its_own_space(store, threads, embedder):
    insert(store, threads[:10])
    embed(store, embedder=embedder, progress=False)  # the default view, thread
    result = embed(store, embedder=embedder, view="last_turn", progress=False)
    assert result["embedded"] == 10 and result["space"].endswith("|last_turn|torch")
    names = [s["name"] for s in spaces(store)]
    assert set(names) == {"all-MiniLM-L6-v2|last_turn|torch", "all-MiniLM-L6-v2|thread|torch"}
    assert all(s["vectors"] == 10 for s in spaces(store))
    ids_thread, X_thread = load_vectors(store, space="all-MiniLM-L6-v2|thread|torch")
    ids_last, X_last = load_vectors(store)  # newest space
    assert ids_last == ids_thread
    assert not np.allclose(X_last, X_thread)
    with pytest.raises(NoVectorsError, match="no embedding space 'nope'"):
        load_vectors(store, space="nope")


def test_no_vectors_says_what_to_do(store):
    with pytest.raises(NoVectorsError, match="run `curate embed` first"):
        load_vectors(store)


@pytest.mark.smoke
def test_cli_embed_json(cli, home, store, threads):
    insert(store, threads[:8])
    out = cli.json("embed", "--home", str(home), "--backend", "torch")
    assert {"embedded", "skipped", "model", "seconds"} <= set(out)
    assert out["embedded"] == 8 and out["skipped"] == 0 and out["model"] == "all-MiniLM-L6-v2"
    again = cli.json("embed", "--home", str(home), "--backend", "torch")
    assert again["embedded"] == 0 and again["skipped"] == 8


def test_cli_bad_backend_is_a_usage_error(cli, home):
    result = cli("embed", "--home", str(home), "--backend", "tpu", code=2)
    assert "tpu" in result.stderr


def test_missing_model_path_fails_with_the_fix(cli, home, store, threads, tmp_path):
    insert(store, threads[:2])
    result = cli("embed", "--home", str(home), "--backend", "torch", "--model", str(tmp_path / "empty"), code=1)
    assert "error:" in result.stderr and "--model" in result.stderr


def test_migration_0002_upgrades_and_downgrades(home):
    from alembic import command

    from curation.store import _alembic_config

    store = Store.open(home, migrate=False)
    store.migrate("0001")
    insert(store, [("kept", [{"role": "user", "content": "hi"}])])
    store.migrate("0002")
    assert {"embedding_spaces", "embeddings"} <= set(sa.inspect(store.engine).get_table_names())
    with store.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    names = set(sa.inspect(store.engine).get_table_names())
    assert "embeddings" not in names and "embedding_spaces" not in names and "conversations" in names
    assert store.count(conversations) == 1
    store.dispose()


class FailingAfter:
    """An injected fault: the real embedder, which dies on its n-th call (a killed process, an OOM)."""

    def __init__(self, embedder: Embedder, calls: int):
        self.inner, self.calls = embedder, calls
        self.label, self.backend_label = embedder.label, embedder.backend_label

    def encode(self, texts):
        self.calls -= 1
        if self.calls < 0:
            raise RuntimeError("killed")
        return self.inner.encode(texts)


def test_interrupted_run_keeps_its_chunks_and_resumes(store, threads, embedder):
    insert(store, threads[:20])
    with pytest.raises(RuntimeError, match="killed"):
        embed(store, embedder=FailingAfter(embedder, calls=2), chunk_size=6, progress=False)
    assert store.count(embeddings) == 12  # two chunks of 6 were committed before the fault
    with store.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM runs WHERE kind = 'embed'")).scalar_one()
    assert status == "failed"
    resumed = embed(store, embedder=embedder, chunk_size=6, progress=False)
    assert resumed["embedded"] == 8 and resumed["skipped"] == 12
    ids, X = load_vectors(store)
    assert ids == sorted(cid for cid, _ in threads[:20])
    by_id = dict(threads)
    fresh = embedder.encode([thread(by_id[cid]) for cid in ids])
    np.testing.assert_allclose((X * fresh).sum(axis=1), 1.0, atol=1e-4)  # chunking does not change the vectors


def test_generated_candidates_are_not_traffic_and_are_not_embedded(store, threads, embedder):
    # a candidate that `curate generate` stored beside a production reply: rated in a pair, never clustered, so it must
    # not inflate cluster sizes or failure rates
    from curation.store.tables import GENERATED

    insert(store, threads[:10])
    cid, messages = threads[10]
    with store.begin() as conn:
        conn.execute(conversations.insert(), [dict(id=cid, messages=dumps(messages), n_messages=len(messages),
                                                   source=GENERATED, ingested_at=utcnow())])
    result = embed(store, embedder=embedder, progress=False)
    assert (result["embedded"], result["skipped"]) == (10, 0)
    ids, _ = load_vectors(store)
    assert cid not in ids and len(ids) == 10
