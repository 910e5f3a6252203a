"""The Curate store goes away in the middle of `curate annotate pull` (issue 22): SQLite locked by another process
(`BEGIN EXCLUSIVE`), or the PostgreSQL server stopped. The pull stops with one line that names the store and says
to run it again; the pages committed before stay whole, nothing of the page being written is kept; and the rerun
stores exactly the server's responses, each once."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import sqlalchemy as sa

from annotations.client import connect
from annotations.tables import rating_responses, ratings
from curation.errors import StoreError
from curation.store import Store

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS, PAGE, STOP_AT_PAGE = 40, 10, 3
SCORES = {"helpfulness": 3, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 2}


def _lock_sqlite(path):
    """Another process holds SQLite's write lock on `path` until the returned process's stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE')\nprint('held', flush=True)\nsys.stdin.read()\ndb.rollback()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own (the shared one must not be stopped): (url, stop, start)."""
    import tempfile

    from annotations.server.settings import free_port

    script = os.path.join(REPO, "scripts", "test-postgres.sh")
    # Under /tmp itself: the postgres user must reach the data folder (pytest's folders are root's alone).
    data = os.path.join(tempfile.gettempdir(), f"curate-pg-{os.getpid()}-{free_port()}")
    env = {**os.environ, "CURATE_TEST_PG_PORT": str(free_port()), "CURATE_TEST_PG_DATA": data}
    url = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300).stdout.strip()
    if not url:
        pytest.skip("no PostgreSQL binaries here")

    def stop():
        command = [_pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]
        subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + command, check=True,
                       capture_output=True, timeout=120)

    def start():
        subprocess.run(["bash", script], env=env, check=True, capture_output=True, timeout=300)

    try:
        yield url, stop, start
    finally:
        subprocess.run(["bash", script, "--stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def _pg_bin(name: str) -> str:
    import glob

    return sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1]


def _pull_with_the_store_gone(store: Store, server, dataset: str, make_unavailable, make_available, monkeypatch):
    import annotations.pull as pull_module
    from annotations.push import push
    from tests.test_annotate_argilla import ANN, BOB, rate
    from tests.test_annotate_faults import _server_ids, _traffic

    _traffic(store, RECORDS)
    conn = connect(server.url, server.api_key, retries=2)
    push(store, dataset, budget=RECORDS, connection=conn, progress=False)
    rate(conn, dataset, {rid: {ANN: SCORES, BOB: {**SCORES, "helpfulness": 2}} for rid in _server_ids(conn, dataset)})
    monkeypatch.setattr(pull_module, "RESPONSES_PAGE", PAGE)

    pages, request = [0], conn.request

    def request_then_fault(method, path, **kwargs):  # the fault, injected when the pull asks for a page
        answer = request(method, path, **kwargs)
        if "/curate/datasets/" in path:
            pages[0] += 1
            if pages[0] == STOP_AT_PAGE:
                make_unavailable()
        return answer

    conn.request = request_then_fault
    with pytest.raises(StoreError) as failed:
        pull_module.pull(store, dataset, connection=conn, progress=False)
    message = str(failed.value)
    assert "\n" not in message and "failed during the pull" in message, message
    assert f"curate annotate pull --dataset {dataset}" in message and f"the {2 * PAGE} responses" in message
    make_available()

    mine = rating_responses.c.dataset == dataset
    with store.connect() as db:  # two whole pages, nothing of the third
        assert db.execute(sa.select(sa.func.count()).where(mine)).scalar_one() == 2 * PAGE
        rated = db.execute(sa.select(sa.func.count()).where(ratings.c.dataset == dataset)).scalar_one()
        records = db.execute(sa.select(sa.func.count(sa.distinct(rating_responses.c.record_id))).where(mine)).scalar_one()
        assert rated == records

    conn.request = request
    result = pull_module.pull(store, dataset, connection=conn, progress=False)
    assert result["responses"] == 2 * RECORDS - 2 * PAGE
    server_side = {(r["external_id"], r["user_id"], r["updated_at"]) for r in _all_responses(conn, dataset)}
    with store.connect() as db:
        rows = db.execute(sa.select(rating_responses.c.record_id, rating_responses.c.annotator,
                                    rating_responses.c.updated_at).where(mine)).all()
        assert db.execute(sa.select(sa.func.count()).where(ratings.c.dataset == dataset)).scalar_one() == RECORDS
    users = {u["id"]: u["username"] for u in conn.request("GET", "/api/v1/users")["items"]}
    assert sorted(rows) == sorted((record, users[user], at) for record, user, at in server_side)


def _all_responses(conn, dataset: str) -> list[dict]:
    found = conn.client.datasets(name=dataset, workspace="argilla")
    return conn.request("GET", f"/api/v1/curate/datasets/{found.id}/responses", params={"limit": 10_000})["items"]


def test_pull_with_the_sqlite_store_locked_mid_pull(tmp_path, argilla_server, monkeypatch):
    home = tmp_path / "home"
    store = Store.open(home, url=f"sqlite:///{home / 'curate.db'}")

    @sa.event.listens_for(store.engine, "connect")
    def _short_wait(dbapi_conn, _record):  # after the store's own: the lock outlasts 2 s instead of 60
        dbapi_conn.execute("PRAGMA busy_timeout=2000")

    store.engine.dispose()
    holder = []
    try:
        _pull_with_the_store_gone(store, argilla_server, "storelock", lambda: holder.append(_lock_sqlite(home / "curate.db")),
                                  lambda: holder[0].communicate("", timeout=60), monkeypatch)
    finally:
        for process in holder:
            process.kill()
        store.dispose()


def test_pull_with_the_postgresql_store_stopped_mid_pull(tmp_path, argilla_server, own_postgres, monkeypatch):
    url, stop, start = own_postgres
    store = Store.open(tmp_path / "home", url=url)
    try:
        _pull_with_the_store_gone(store, argilla_server, "storestop", stop, start, monkeypatch)
    finally:
        store.dispose()
