"""Push, pull and status against the real embedded Argilla server (one per session, see fixtures_argilla.py).

The store holds real oasst1 conversations scored by the real detectors. Cluster assignments, vectors and reward
attributes are the inputs other stages write; here they are written directly (seeded) so that these tests do not
depend on embedding speed.
"""
from __future__ import annotations

import random
import uuid
import warnings

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from annotations.client import AnnotationError, connect
from annotations.pull import pull, status
from annotations.push import push, record_id
from annotations.tables import annotation_records, rating_responses, ratings
from annotations.template import ATTRIBUTES
from curation.errors import CurateError
from curation.store import Store, dumps, utcnow

MODEL_VERSION = "rm-test-v1"
# annotator names of our own: the session server is shared with other areas' tests
ANN, BOB, CY = "rater-ann", "rater-bob", "rater-cy"


def prepare_store(store: Store, oasst_file, n_clusters: int = 6, vectors: bool = True, extra=None) -> list[str]:
    """Ingest oasst1 (and `extra` records), score failures, and write clusters, vectors and rewards as later stages would."""
    from curation.ingest import ingest, ingest_records
    from curation.signals import score_failures
    from curation.store.failure_tables import cluster_assignments, clusters, rewards

    ingest(store, [oasst_file], progress=False)
    if extra:
        ingest_records(store, extra)
    score_failures(store, progress=False)
    with store.connect() as conn:
        ids = sorted(conn.execute(sa.text("SELECT id FROM conversations")).scalars())
    rng = random.Random(0)
    run = store.start_run("test-setup")
    with store.begin() as conn:
        conn.execute(clusters.insert(), [{"id": k, "label": f"topic {k}", "keywords": dumps([f"kw{k}"]), "size": 0}
                                         for k in range(n_clusters)])
        conn.execute(cluster_assignments.insert(), [
            {"conversation_id": cid, "cluster_id": i % n_clusters, "run_id": run, "novel": int(i % 37 == 0)}
            for i, cid in enumerate(ids)])
        conn.execute(rewards.insert(), [
            {"conversation_id": cid, "model_version": MODEL_VERSION, "reward": rng.random(), "scored_at": utcnow(),
             "attributes": dumps({a: rng.uniform(0, 4) for a in ATTRIBUTES}), "run_id": run} for cid in ids])
    if vectors:
        from curation.embed.run import text_hash
        from curation.embed.vectors import ensure_space, write_vectors

        space = ensure_space(store, "test|thread|torch", "test", "thread", "torch", 384, run)
        gen = np.random.default_rng(0)
        matrix = gen.normal(size=(len(ids), 384)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        write_vectors(store, space, [(cid, text_hash(cid), v) for cid, v in zip(ids, matrix)], run)
    return ids


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def conn(argilla_env):
    return connect()


def server_records(conn, dataset: str, include: str = "suggestions,vectors") -> list[dict]:
    found = conn.client.datasets(name=dataset, workspace="argilla")
    items, offset = [], 0
    while True:
        page = conn.request("GET", f"/api/v1/datasets/{found.id}/records",
                            params={"include": include.split(","), "offset": offset, "limit": 1000})["items"]
        items += page
        offset += len(page)
        if len(page) < 1000:
            return items


def test_push_routes_with_metadata_vectors_suggestions_and_counts_new_records(store, oasst_file, conn):
    prepare_store(store, oasst_file)
    dataset = unique("push")
    result = push(store, dataset, budget=60, connection=conn, progress=False)
    assert result["pushed"] == 60 and result["skipped"] == 0 and result["dataset"] == dataset
    assert result["by_strategy"]["failure"] == 48 and sum(result["by_strategy"].values()) == 60

    records = server_records(conn, dataset)
    assert len(records) == 60 == len({r["external_id"] for r in records})
    with store.connect() as c:
        routed = dict(c.execute(sa.select(annotation_records.c.record_id, annotation_records.c.strategy)).all())
    assert set(routed) == {r["external_id"] for r in records}
    record = next(r for r in records if routed[r["external_id"]] == "failure")
    meta = record["metadata"]
    assert 0 < meta["failure_score"] <= 1 and meta["cluster_label"] == f"topic {meta['cluster_id']}"
    assert meta["strategy"] == "failure" and meta["date"][:2] == "20"
    assert len(record["vectors"]["conversation_embedding"]) == 384
    assert {s["agent"] for s in record["suggestions"]} == {MODEL_VERSION} and len(record["suggestions"]) == 5
    assert all(0 <= s["value"] <= 4 for s in record["suggestions"])
    assert record["fields"]["response"] and isinstance(record["fields"]["conversation"], list)
    # failure picks are the high scores: their mean beats the random share's
    scores = {r["external_id"]: r["metadata"].get("failure_score", 0) for r in records}
    failure = [scores[i] for i, s in routed.items() if s == "failure"]
    explore = [scores[i] for i, s in routed.items() if s != "failure"]
    assert np.mean(failure) > np.mean(explore)

    # the budget counts new records: a second push adds as many again, none of them pushed before
    more = push(store, dataset, budget=10, connection=conn, progress=False)
    assert more["pushed"] == 10 and more["skipped"] == 0
    assert len(server_records(conn, dataset, "responses")) == 70
    with store.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(annotation_records)).scalar_one() == 70


def test_budget_counts_new_records_after_an_ids_push(store, oasst_file, conn):
    ids = prepare_store(store, oasst_file, vectors=False)
    dataset = unique("budget")
    push(store, dataset, ids=[ids[0]], connection=conn, progress=False)
    result = push(store, dataset, budget=29, connection=conn, progress=False)
    assert result["pushed"] == 29 and result["skipped"] == 0
    assert len(server_records(conn, dataset, "responses")) == 30


def test_a_cut_off_push_is_completed_by_the_same_command(store, oasst_file, conn, monkeypatch):
    prepare_store(store, oasst_file, vectors=False)
    dataset = unique("resume")
    real, calls = conn.request, []

    def drop_third_batch(method, path, **kwargs):  # the server goes away during the third batch
        if method == "PUT" and path.endswith("/records/bulk"):
            calls.append(path)
            if len(calls) == 3:
                raise AnnotationError("the Argilla server at test did not answer")
        return real(method, path, **kwargs)

    monkeypatch.setattr(conn, "request", drop_third_batch)
    with pytest.raises(AnnotationError):
        push(store, dataset, budget=25, connection=conn, batch_size=5, progress=False)
    monkeypatch.setattr(conn, "request", real)
    sent = len(server_records(conn, dataset, "responses"))
    assert 5 <= sent < 25
    finished = push(store, dataset, budget=25, connection=conn, progress=False)
    assert finished["pushed"] == 25 - sent and len(server_records(conn, dataset, "responses")) == 25
    # once finished, the same command is a new push of 25
    assert push(store, dataset, budget=25, connection=conn, progress=False)["pushed"] == 25


def test_push_redacts_pii_before_it_leaves_the_store(store, oasst_file, conn):
    secret_messages = [
        {"role": "user", "content": "I'm jane.roe@example.org, card 4111 1111 1111 1111, call +44 20 7946 0958."},
        {"role": "assistant", "content": "Use https://admin:hunter22x@db.example.com and key sk-abcdefghijklmnopqrstuvwxyz012345 from 10.1.2.3."},
    ]
    prepare_store(store, oasst_file, vectors=False, extra=[{"id": "pii-1", "messages": secret_messages}])
    dataset = unique("pii")
    result = push(store, dataset, ids=["pii-1"], connection=conn, progress=False)
    assert result["pushed"] == 1
    (record,) = server_records(conn, dataset)
    text = orjson.dumps(record).decode()
    for raw in ("jane.roe", "4111 1111", "7946 0958", "hunter22x", "sk-abcdef", "10.1.2.3"):
        assert raw not in text
    assert record["fields"]["conversation"][0]["content"] == "I'm [EMAIL], card [CARD], call [PHONE]."
    assert record["fields"]["response"] == "Use https://[URL_CREDENTIALS]@db.example.com and key [SECRET] from [IP]."
    assert "vectors" not in record or not record["vectors"]  # no embeddings in this store: no vector field


def test_push_ids_exact_and_unknown_ids(store, oasst_file, conn):
    ids = prepare_store(store, oasst_file)
    dataset = unique("ids")
    chosen = ids[100:105]
    assert push(store, dataset, ids=chosen, connection=conn, progress=False)["pushed"] == 5
    assert {r["external_id"] for r in server_records(conn, dataset)} == {record_id(i) for i in chosen}
    with pytest.raises(CurateError, match="not in the store"):
        push(store, dataset, ids=["nope"], connection=conn, progress=False)
    # a conversation routed to one dataset is not routed to another
    other = push(store, unique("other"), ids=chosen[:2], connection=conn, progress=False)
    assert other["pushed"] == 0 and other["skipped"] == 2


def test_push_refuses_a_dataset_with_different_settings(store, oasst_file, conn):
    prepare_store(store, oasst_file, vectors=False)
    dataset = unique("settings")
    push(store, dataset, budget=3, connection=conn, min_submitted=2, progress=False)
    with pytest.raises(AnnotationError, match=r"different settings: distribution is overlap/2, ours is overlap/1"):
        push(store, dataset, budget=5, connection=conn, progress=False)


def test_cli_push_unreachable_server_is_one_line(cli, store, monkeypatch):
    from curation.ingest import ingest_records

    ingest_records(store, [{"id": "x", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}])
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ARGILLA_API_KEY", "k")
    monkeypatch.setenv("CURATE_ANNOTATE_RETRIES", "2")
    result = cli("annotate", "push", "--dataset", "d", "--budget", "1", code=1)
    assert result.stderr.count("\n") == 1 and "http://127.0.0.1:9" in result.stderr and "curate annotate serve" in result.stderr


def _annotators(conn, names=(ANN, BOB, CY)):
    import argilla as rg

    workspace = conn.client.workspaces("argilla")
    users = []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "user not found" before the first test creates them
            user = conn.client.users(username=name)
        if user is None:
            user = rg.User(username=name, password="pw-" + uuid.uuid4().hex, role="annotator", client=conn.client).create()
            user.add_to_workspace(workspace)
        users.append(user)
    return users


def rate(conn, dataset: str, ratings_by_record: dict[str, dict[str, dict | None]]) -> None:
    """Write responses as the annotators would (owner bulk upsert with user ids); None = discarded with no values."""
    users = {u.username: str(u.id) for u in _annotators(conn)}
    found = conn.client.datasets(name=dataset, workspace="argilla")
    items = []
    for external_id, by_user in ratings_by_record.items():
        responses = []
        for name, values in by_user.items():
            if values is None:
                responses.append({"user_id": users[name], "values": None, "status": "discarded"})
            else:
                responses.append({"user_id": users[name], "status": "submitted",
                                  "values": {k: {"value": v} for k, v in values.items()}})
        items.append({"external_id": external_id, "responses": responses})
    for start in range(0, len(items), 250):
        conn.request("PUT", f"/api/v1/datasets/{found.id}/records/bulk", json={"items": items[start : start + 250]})


def test_pull_stores_raw_responses_consensus_and_agreement(store, oasst_file, conn, monkeypatch):
    prepare_store(store, oasst_file, vectors=False)
    dataset = unique("pull")
    push(store, dataset, budget=30, connection=conn, progress=False)
    records = sorted(r["external_id"] for r in server_records(conn, dataset, "responses"))
    scores = {a: 3 for a in ATTRIBUTES}
    plan = {
        records[0]: {ANN: scores, BOB: {**scores, "helpfulness": 2}, CY: {**scores, "helpfulness": 4}},
        records[1]: {ANN: {**scores, "correctness": 0}, BOB: scores, CY: {**scores, "correctness": 4}},  # spread 4
        records[2]: {ANN: scores, BOB: None},  # a discarded response with null values (crashes SDK 2.8.0)
        records[3]: {ANN: {**scores, "preference": "-2", "rewrite": "A better answer."}},
    }
    rate(conn, dataset, plan)
    with pytest.raises(AttributeError):  # why pull reads JSON: the SDK's own iterator dies on the discarded null
        list(conn.client.datasets(name=dataset, workspace="argilla").records(with_responses=True))

    result = pull(store, dataset, connection=conn, progress=False)
    assert result["pulled"] == 4 and result["responses"] == 8
    with store.connect() as c:
        raw = {r.id: r for r in c.execute(sa.select(rating_responses))}
        consensus = {r.record_id: r for r in c.execute(sa.select(ratings))}
    assert len(raw) == 9 and raw[f"{records[2]}:{BOB}"].status == "discarded"
    assert raw[f"{records[2]}:{BOB}"].helpfulness is None
    assert raw[f"{records[3]}:{ANN}"].preference == -2 and raw[f"{records[3]}:{ANN}"].rewrite == "A better answer."
    assert consensus[records[0]].helpfulness == pytest.approx(3.0) and consensus[records[0]].disagreement == 0
    assert consensus[records[1]].disagreement == 1 and consensus[records[1]].correctness == pytest.approx(7 / 3)
    assert consensus[records[2]].n_annotators == 1
    assert orjson.loads(consensus[records[0]].annotators) == [ANN, BOB, CY]
    agreement = result["agreement"]
    assert agreement["records"] == 4 and agreement["disagreement"] == 1
    assert agreement["annotators"][CY]["count"] == 2 and agreement["annotators"][CY]["mean_offset"] > 0

    again = pull(store, dataset, connection=conn, progress=False)
    assert again["pulled"] == 0 and again["responses"] == 0
    _responses_endpoint_matches_the_records_listing(conn, dataset, monkeypatch)
    rate(conn, dataset, {records[0]: {BOB: scores}})  # bob changes his mind
    changed = pull(store, dataset, connection=conn, progress=False)
    assert changed["pulled"] == 1 and changed["responses"] == 1
    with store.connect() as c:
        assert c.execute(sa.select(ratings.c.helpfulness).where(ratings.c.record_id == records[0])).scalar() == pytest.approx(10 / 3)

    report = status(store, dataset, connection=conn)
    assert report["total"] == 30 and report["store"]["pushed"] == 30 and report["store"]["rated"] == 4
    assert report["annotators"][BOB]["discarded"] == 1 and report["store"]["annotators"][ANN]["submitted"] == 4

    # A rated record that the store does not know yet (the server stored a push batch, the push died before
    # recording it): pull skips it, and the next pull still reaches back to it once push recorded it.
    users = {u.username: str(u.id) for u in _annotators(conn)}
    found = conn.client.datasets(name=dataset, workspace="argilla")
    late = records[0] + "-late"
    conn.request("PUT", f"/api/v1/datasets/{found.id}/records/bulk", json={"items": [{
        "external_id": late, "fields": {"conversation": [{"role": "user", "content": "hi"}], "response": "hello"},
        "responses": [{"user_id": users[CY], "status": "submitted", "values": {a: {"value": 1} for a in ATTRIBUTES}}]}]})
    rate(conn, dataset, {records[1]: {BOB: scores}})  # a newer response, stored by the same pull
    skipped = pull(store, dataset, connection=conn, progress=False)
    assert skipped["unknown_records"] == 1 and skipped["responses"] == 1
    with store.begin() as c:
        c.execute(annotation_records.insert().values(record_id=late, dataset=dataset, conversation_id=records[0],
                                                     priority=0.0, strategy="ids", pushed_at=utcnow(), run_id="test"))
    import annotations.pull as pull_module

    monkeypatch.setattr(pull_module, "SINCE_MARGIN", pull_module.timedelta(0))  # only the watermark reaches back
    caught = pull(store, dataset, connection=conn, progress=False)
    assert caught["responses"] == 1 and caught["unknown_records"] == 0


def _responses_endpoint_matches_the_records_listing(conn, dataset: str, monkeypatch) -> None:
    """The embedded server's responses endpoint gives pull exactly what a stock server's records listing gives."""
    import datetime as dt

    import annotations.pull as pull_module

    dataset_id = str(conn.client.datasets(name=dataset, workspace="argilla").id)

    def flat(pages) -> list[tuple]:
        return sorted((item["external_id"], r["user_id"], r["status"], orjson.dumps(r["values"], option=orjson.OPT_SORT_KEYS),
                       r["updated_at"]) for items, _ in pages for item in items for r in item.get("responses") or [])

    listing = flat(pull_module._record_pages(conn, dataset_id))
    assert len(listing) == 9
    monkeypatch.setattr(pull_module, "RESPONSES_PAGE", 4)  # three keyset pages
    assert flat(pull_module._pages(conn, dataset_id, None)) == listing
    newest = dt.datetime.fromisoformat(max(r[4] for r in listing))
    assert flat(pull_module._pages(conn, dataset_id, newest + dt.timedelta(seconds=1))) == []
    assert flat(pull_module._pages(conn, dataset_id, newest)) == [r for r in listing if r[4] == max(x[4] for x in listing)]
    page = conn.request("GET", f"/api/v1/curate/datasets/{dataset_id}/responses", params={"limit": 4})
    assert len(page["items"]) == 4 and page["next"]


@pytest.mark.smoke
def test_cli_push_pull_status_json(cli, store, oasst_file, argilla_env):
    prepare_store(store, oasst_file, vectors=False)
    dataset = unique("cli")
    pushed = cli.json("annotate", "push", "--dataset", dataset, "--budget", "12")
    assert {"pushed", "skipped", "dataset"} <= set(pushed) and pushed["pushed"] == 12
    pulled = cli.json("annotate", "pull", "--dataset", dataset)
    assert pulled["pulled"] == 0 and pulled["responses"] == 0 and "before_filter" in pulled["agreement"]
    state = cli.json("annotate", "status", "--dataset", dataset)
    assert state["total"] == 12 and state["completed"] == 0 and state["pending"] == 12
    human = cli("annotate", "status", "--dataset", dataset).stdout
    assert "0 of 12 records completed" in human


def test_push_pairs_siblings_into_preference_records(store, oasst_file, conn):
    from curation.messages import context_key
    from curation.store import loads

    prepare_store(store, oasst_file, vectors=False)
    dataset = unique("pairs")
    result = push(store, dataset, budget=20, connection=conn, pairs=True, progress=False)
    assert result["pushed"] == 20
    with store.connect() as c:
        routed = c.execute(sa.select(annotation_records)).all()
        messages = dict(c.execute(sa.text("SELECT id, messages FROM conversations")).all())
    paired = [r for r in routed if r.conversation_id_b]
    assert len(paired) >= 10  # most oasst1 replies have a sibling
    for r in paired:  # a real sibling: same context, different reply
        assert r.record_id == record_id(r.conversation_id, r.conversation_id_b)
        assert context_key(loads(messages[r.conversation_id])) == context_key(loads(messages[r.conversation_id_b]))
    used = [r.conversation_id for r in routed] + [r.conversation_id_b for r in paired]
    assert len(used) == len(set(used))
    by_id = {r["external_id"]: r for r in server_records(conn, dataset)}
    assert by_id[paired[0].record_id]["fields"]["response_b"]
    more = push(store, dataset, budget=5, connection=conn, pairs=True, progress=False)
    with store.connect() as c:
        routed = c.execute(sa.select(annotation_records)).all()
    used = [r.conversation_id for r in routed] + [r.conversation_id_b for r in routed if r.conversation_id_b]
    assert more["pushed"] == 5 and len(routed) == 25 and len(used) == len(set(used))

    rate(conn, dataset, {paired[0].record_id: {ANN: {**{a: 2 for a in ATTRIBUTES}, "preference": "3", "justification": "B is right."}}})
    pull(store, dataset, connection=conn, progress=False)
    with store.connect() as c:
        row = c.execute(sa.select(ratings).where(ratings.c.record_id == paired[0].record_id)).one()
    assert row.preference == 3 and row.conversation_id_b == paired[0].conversation_id_b
