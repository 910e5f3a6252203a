"""The store: opening migrates, upgrades keep data, several processes can open it at once."""
from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from curation.store import Store, head_revision
from curation.store.tables import conversations


def test_open_brings_schema_to_head(store):
    assert store.revision() == head_revision()
    with store.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert {"conversations", "feedback", "runs"} <= names


def test_upgrade_from_first_schema_keeps_rows(home):
    store = Store.open(home, migrate=False)
    store.migrate("0001")
    assert store.revision() == "0001"
    with store.begin() as conn:
        conn.execute(conversations.insert().values(id="c1", messages="[]", n_messages=0, ingested_at="2026-01-01T00:00:00.000000Z"))
    store.migrate()
    assert store.revision() == head_revision()
    assert store.count(conversations) == 1
    store.dispose()


def test_reopen_is_a_no_op(home):
    first = Store.open(home)
    first.dispose()
    again = Store.open(home)
    assert again.revision() == head_revision()
    again.dispose()


def test_concurrent_first_opens_do_not_collide(home):
    code = "from curation.store import Store; Store.open().dispose(); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-500:] for o in outs]


def test_runs_are_recorded(store):
    run_id = store.start_run("ingest", {"paths": ["x"]})
    store.finish_run(run_id, "done", {"read": 1})
    with store.connect() as conn:
        row = conn.execute(sa.text("SELECT status, summary FROM runs WHERE id = :id"), {"id": run_id}).one()
    assert row.status == "done" and '"read":1' in row.summary
