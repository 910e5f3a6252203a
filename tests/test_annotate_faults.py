"""Fault tests: the Argilla server is killed (SIGKILL) halfway through a push and halfway through a pull.

After a restart, the same command finishes the job: exactly N records on the server, no duplicate, and every
response stored once. N is 5,000 as in the issue; CURATE_FAULT_RECORDS makes it smaller for a quick local run.
"""
from __future__ import annotations

import os
import secrets
import threading
import time

import pytest
import sqlalchemy as sa

from annotations.client import AnnotationError, connect
from annotations.tables import annotation_records, rating_responses, ratings

N = int(os.environ.get("CURATE_FAULT_RECORDS", "5000"))
pytestmark = pytest.mark.slow


@pytest.fixture
def own_server(tmp_path):
    """A server of this test's own (the session one must not be killed), restartable on the same port."""
    from annotations.server import start_background
    from annotations.server.settings import free_port

    options = {"port": free_port(), "api_key": "fault." + secrets.token_hex(8), "owner_password": secrets.token_hex(8)}
    home = tmp_path / "argilla-home"
    handles = [start_background(home, **options)]

    def restart():
        handles.append(start_background(home, **options))
        return handles[-1]

    yield handles[0], restart
    for handle in handles:
        handle.stop()


def _traffic(store, n: int) -> None:
    from curation.ingest import ingest_records
    from curation.synthetic import generate
    from curation.signals import score_failures

    ingest_records(store, generate(n, seed=3))
    score_failures(store, progress=False)


def _count(store, table, column_filter) -> int:
    with store.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(column_filter)).scalar_one()


def _kill_when(server, condition, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the work never got halfway"
        time.sleep(0.05)
    server.kill()


def _server_ids(conn, dataset: str) -> list[str]:
    found = conn.client.datasets(name=dataset, workspace="argilla")
    ids, offset = [], 0
    while True:
        page = conn.request("GET", f"/api/v1/datasets/{found.id}/records", params={"offset": offset, "limit": 1000})["items"]
        ids += [r["external_id"] for r in page]
        offset += len(page)
        if len(page) < 1000:
            return ids


def _run_in_thread(func):
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = func()
        except Exception as exc:  # the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_push_killed_halfway_resumes_without_duplicates(store, own_server):
    from annotations.push import push

    server, restart = own_server
    _traffic(store, N)
    conn = connect(server.url, server.api_key, retries=2)
    routed = annotation_records.c.dataset == "faults"
    thread, outcome = _run_in_thread(lambda: push(store, "faults", budget=N, connection=conn, batch_size=100, progress=False))
    _kill_when(server, lambda: _count(store, annotation_records, routed) >= N // 2)
    thread.join()
    assert isinstance(outcome.get("error"), AnnotationError) and server.url in str(outcome["error"])
    done_before = _count(store, annotation_records, routed)
    assert N // 2 <= done_before < N

    server = restart()
    conn = connect(server.url, server.api_key)
    result = push(store, "faults", budget=N, connection=conn, progress=False)
    assert result["pushed"] == N - done_before
    ids = _server_ids(conn, "faults")
    assert len(ids) == N == len(set(ids))
    assert _count(store, annotation_records, routed) == N
    # finished: the same command is now a new push, and every conversation is in the dataset already
    assert push(store, "faults", budget=N, connection=conn, progress=False)["pushed"] == 0


def test_pull_killed_halfway_resumes_without_losing_or_doubling(store, own_server, monkeypatch):
    import annotations.pull as pull_module
    from annotations.push import push
    from tests.test_annotate_argilla import ANN, BOB, rate

    server, restart = own_server
    _traffic(store, N)
    conn = connect(server.url, server.api_key, retries=2)
    push(store, "pullfault", budget=N, connection=conn, progress=False)
    ids = _server_ids(conn, "pullfault")
    scores = {"helpfulness": 3, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 2}
    rate(conn, "pullfault", {rid: {ANN: scores, BOB: {**scores, "helpfulness": 2}} for rid in ids})

    # more pages, so that "halfway" is between two of them
    monkeypatch.setattr(pull_module, "PAGE", 100)
    monkeypatch.setattr(pull_module, "RESPONSES_PAGE", 100)
    in_dataset = rating_responses.c.dataset == "pullfault"
    thread, outcome = _run_in_thread(lambda: pull_module.pull(store, "pullfault", connection=conn, progress=False))
    _kill_when(server, lambda: _count(store, rating_responses, in_dataset) >= N)
    thread.join()
    assert isinstance(outcome.get("error"), AnnotationError)
    stored_before = _count(store, rating_responses, in_dataset)
    assert N <= stored_before < 2 * N

    server = restart()
    conn = connect(server.url, server.api_key)
    result = pull_module.pull(store, "pullfault", connection=conn, progress=False)
    assert result["responses"] == 2 * N - stored_before
    assert _count(store, rating_responses, in_dataset) == 2 * N
    assert _count(store, ratings, ratings.c.dataset == "pullfault") == N
    assert result["agreement"]["responses"] == 2 * N
