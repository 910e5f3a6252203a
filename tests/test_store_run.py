"""`with store.run(kind, params) as run:` records one run of a stage: done with its summary, or failed with what it
did so far and the error, whatever the block raised."""
from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

from curation.ingest import ingest_records
from curation.store.tables import runs


def _row(store, run_id):
    with store.connect() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()
    return row.kind, row.status, orjson.loads(row.params), orjson.loads(row.summary), row.finished_at


def test_a_block_that_ends_records_its_status_and_a_copy_of_its_summary(store):
    with store.run("export", {"out": "x"}) as run:
        summary = run.finish({"rows": 3, "temporary": True}, "partial")
        summary.pop("temporary")  # the caller may change what it returns; the row keeps what was finished
    kind, status, params, stored, finished = _row(store, run.id)
    assert (kind, status, params, stored) == ("export", "partial", {"out": "x"}, {"rows": 3, "temporary": True})
    assert finished


def test_a_block_that_raises_is_recorded_failed_with_its_progress_and_the_error(store):
    counts = {"scored": 0}
    with pytest.raises(KeyboardInterrupt):
        with store.run("score") as run:
            run.progress = lambda: dict(counts)
            counts["scored"] = 7
            raise KeyboardInterrupt
    _, status, params, stored, _ = _row(store, run.id)
    assert status == "failed" and params == {}
    assert stored == {"scored": 7, "error": "KeyboardInterrupt"}


def test_ingest_records_that_fail_leave_a_failed_run_not_a_running_one(store):
    def records():
        yield {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError):
        ingest_records(store, records())
    with store.connect() as conn:
        statuses = conn.execute(sa.select(runs.c.status).where(runs.c.kind == "ingest")).scalars().all()
    assert statuses == ["failed"]
