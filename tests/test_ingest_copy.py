"""The bulk write path: on PostgreSQL, ingest COPYs each batch into a staging table and moves it with one
INSERT … SELECT in the batch's transaction (`curation.store.copy_tuples`); SQLite keeps its multi-row INSERTs.

These tests run on both backends (the PostgreSQL pass of `make test` runs them against a real server): on SQLite
they check the same outcomes through the plain path, and that the COPY path is not taken there.
"""
from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

import curation.store as store_module
from curation.config import IngestSettings
from curation.ingest import COLUMNS, ingest
from curation.ingest.records import FEEDBACK_COLUMNS, Limits, chat_record
from curation.store import COPY_MIN_ROWS, insert_tuples
from curation.store.tables import conversations, feedback
from tests.test_ingest import chat, quarantine_entries, write_lines

# text that COPY's text format must escape: its field and row separators, its escape character, its NULL marker
# (\N) and its end-of-data marker (\.), carriage returns, control characters, and non-ASCII of every width
AWKWARD = ["tab\there", "new\nline", "cr\r\nlf", "back\\slash", "\\N", "\\.", "ends with \\", "\\\\N", "",
           "é ü ß 中文 🎉 \u2028 \u200b \ufeff", "quote ' \" `", "\x01\x08\x0b\x0c\x1f\x7f", " leading and trailing ",
           "a|b,c;d", "\\t literally", "{\"json\": \"in text\\n\"}"]


@pytest.fixture
def copies(monkeypatch):
    """The rows each call of the COPY path got, per table (a spy: the real function still writes them)."""
    real, seen = store_module.copy_tuples, []

    def spy(conn, table, columns, rows, *args):
        seen.append((table.name, len(rows)))
        return real(conn, table, columns, rows, *args)

    monkeypatch.setattr(store_module, "copy_tuples", spy)
    return seen


def values_inserts(store):
    """Counts the multi-row `INSERT … VALUES` statements SQLAlchemy sends, per table."""
    counts = {"conversations": 0, "feedback": 0}

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        for name in counts:
            if statement.startswith(f"INSERT INTO {name} ") and " VALUES " in statement:
                counts[name] += 1

    return counts


def awkward_record(i: int) -> dict:
    text = AWKWARD[i % len(AWKWARD)]
    return {"id": f"odd-{i}\t{text}"[:150], "model": f"m{text}"[:150], "session_id": f"s{i}{text}"[:150],
            "messages": [{"role": "user", "content": f"{i}: {text}"}, {"role": "assistant", "content": text + "!"}],
            "metadata": {"note": text, f"key{text}": [text, i]},
            "feedback": [{"type": "comment", "value": text, "turn": 1}]}


def test_ingest_takes_the_copy_path_on_postgresql_only(store, tmp_path, copies):
    from curation.synthetic import write_jsonl

    inserts = values_inserts(store)
    path = write_jsonl(tmp_path / "t.jsonl", 1_000, seed=3)
    summary = ingest(store, [path], settings=IngestSettings(batch_size=500), progress=False)
    assert summary["ingested"] == store.count(conversations) == 1_000
    stored_feedback = store.count(feedback)
    assert summary["feedback_events"] == stored_feedback > 0
    if store.dialect == "postgresql":
        # every batch (~250 feedback rows each) went through COPY, and no conversation or feedback row through
        # INSERT … VALUES
        assert [n for table, n in copies if table == "conversations"] == [500, 500]
        assert sum(n for table, n in copies if table == "feedback") == stored_feedback
        assert inserts == {"conversations": 0, "feedback": 0}
    else:
        assert copies == [] and inserts["conversations"] >= 3 and inserts["feedback"] >= 3


def test_awkward_text_survives_byte_for_byte(store, tmp_path):
    n = max(COPY_MIN_ROWS, 3 * len(AWKWARD))
    records = [awkward_record(i) for i in range(n)]
    summary = ingest(store, [write_lines(tmp_path / "odd.jsonl", records)], progress=False)
    assert summary["ingested"] == n and summary["quarantined"] == 0
    limits = Limits()
    expected = {conv.id: conv for conv in (chat_record(r, limits) for r in records)}
    with store.connect() as conn:
        rows = conn.execute(sa.select(*[conversations.c[c] for c in COLUMNS[:8]])).all()
        fb = conn.execute(sa.select(*[feedback.c[c] for c in FEEDBACK_COLUMNS])).all()
    assert {tuple(row) for row in rows} == {conv.row for conv in expected.values()}
    assert {tuple(row) for row in fb} == {f for conv in expected.values() for f in conv.feedback}
    assert {orjson.loads(row.metadata)["note"] for row in rows} == set(AWKWARD)


def test_insert_tuples_keeps_every_value_nulls_and_first_row_per_key(store):
    rows = [(f"k{i}", AWKWARD[i % len(AWKWARD)], None if i % 3 else AWKWARD[-i % len(AWKWARD)], None, "",
             None, "{}", i, "\\N", None, f"t{i}") for i in range(COPY_MIN_ROWS + 50)]
    repeats = [(f"k{i}", "a later row with the same key", *row[2:]) for i, row in enumerate(rows[:10])]
    with store.begin() as conn:
        assert insert_tuples(conn, conversations, COLUMNS, rows + repeats) == len(rows)
        assert insert_tuples(conn, conversations, COLUMNS, rows) == 0  # all stored already
    with store.connect() as conn:
        stored = {tuple(row) for row in conn.execute(sa.select(*[conversations.c[c] for c in COLUMNS]))}
    assert stored == set(rows)


def test_conflicts_inside_a_copy_batch_and_against_stored_rows_are_quarantined(store, tmp_path, copies):
    first = [chat(i, feedback=[{"type": "thumbs_up"}]) for i in range(COPY_MIN_ROWS + 20)]
    ingest(store, [write_lines(tmp_path / "first.jsonl", first)], progress=False)
    other = chat(5)
    other["messages"][1]["content"] = "another answer"
    twin_a, twin_b = chat(9000), chat(9000)
    twin_b["messages"][1]["content"] = "not the same answer"
    second = first + [other, twin_a, twin_b, chat(9001), chat(9001)]
    summary = ingest(store, [write_lines(tmp_path / "second.jsonl", second)], progress=False)
    if store.dialect == "postgresql":
        assert ("conversations", len(second)) in copies  # the whole batch, repeats and conflicts included
    assert summary["read"] == len(second)
    assert (summary["ingested"], summary["conflicts"], summary["quarantined"]) == (2, 2, 2)
    assert summary["duplicates"] == len(first) + 1
    entries = quarantine_entries(summary)
    assert [(e["line"], e["conflict"]["id"]) for e in entries] == [(len(first) + 1, "c5"), (len(first) + 3, "c9000")]
    for entry in entries:
        assert entry["conflict"]["stored"] != entry["conflict"]["new"]
        assert entry["conflict"]["stored"] in entry["reason"] and entry["conflict"]["new"] in entry["reason"]
    with store.connect() as conn:
        answers = dict(conn.execute(sa.select(conversations.c.id, conversations.c.messages)
                                    .where(conversations.c.id.in_(["c5", "c9000"]))).all())
    assert "another answer" not in answers["c5"] and "not the same answer" not in answers["c9000"]


@pytest.mark.parametrize("table", ["conversations", "feedback"])
def test_a_fault_in_the_middle_of_a_batch_leaves_nothing_of_it(store, tmp_path, table):
    from curation.synthetic import write_jsonl
    from curation.store.tables import runs

    path = write_jsonl(tmp_path / "t.jsonl", 1_000, seed=5)
    with open(path, "rb") as handle:
        lines = [orjson.loads(line) for line in handle]
    # the 250th conversation of the file, in the middle of the second batch of 200, or its first feedback row
    victim = next(r for r in lines[249:] if r.get("feedback"))["id"]
    column = "id" if table == "conversations" else "conversation_id"
    with store.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} WHEN NEW.{column} = '{victim}' "
                                 "BEGIN SELECT RAISE(ABORT, 'refused row'); END")
        else:
            conn.exec_driver_sql(f"CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.{column} = '{victim}' "
                                 "THEN RAISE EXCEPTION 'refused row'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()")
    with pytest.raises(sa.exc.DBAPIError, match="refused row"):
        ingest(store, [path], settings=IngestSettings(batch_size=200), progress=False)
    first_batch = {r["id"] for r in lines[:200]}
    with store.connect() as conn:
        stored = set(conn.execute(sa.select(conversations.c.id)).scalars())
        about = set(conn.execute(sa.select(feedback.c.conversation_id)).scalars())
        status = conn.execute(sa.select(runs.c.status)).scalar_one()
    assert stored == first_batch and about <= first_batch and status == "failed"
    with store.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse" + (" ON " + table if store.dialect == "postgresql" else ""))
    again = ingest(store, [path], progress=False)
    assert (again["duplicates"], again["ingested"]) == (200, 800)
    assert store.count(conversations) == 1_000


def test_insert_tuples_keeps_bytes_floats_and_integers_exactly(store):
    """Other stages insert through the same helper: binary (every byte value), floats and integers come back equal."""
    from curation.store.failure_tables import clusters

    columns = ("id", "label", "centroid", "radius", "size")
    floats = [0.1, 1 / 3, 1e-300, -0.0, 2.5e15, -7.25]
    rows = [(i, AWKWARD[i % len(AWKWARD)], bytes(range(256))[i % 256:] + b"\x00\t\n\\", floats[i % len(floats)] * i,
             2**31 - 1 - i) for i in range(COPY_MIN_ROWS + 20)]
    with store.begin() as conn:
        assert insert_tuples(conn, clusters, columns, rows) == len(rows)
    with store.connect() as conn:
        stored = [tuple(row) for row in conn.execute(sa.select(*[clusters.c[c] for c in columns]).order_by(clusters.c.id))]
    assert stored == rows


def test_a_value_copy_refuses_raises_the_error_sqlalchemy_would(store):
    """Callers catch SQLAlchemy's errors: one raised inside COPY comes as one too, without the rows in its text."""
    from curation.store.failure_tables import clusters

    if store.dialect != "postgresql":
        pytest.skip("SQLite stores any integer in an INTEGER column")
    rows = [(i, f"secret {i}", None, None, 2**40 if i == 150 else i) for i in range(COPY_MIN_ROWS + 100)]
    with pytest.raises(sa.exc.DataError, match="out of range") as caught, store.begin() as conn:
        insert_tuples(conn, clusters, ("id", "label", "centroid", "radius", "size"), rows)
    assert "secret" not in str(caught.value)
    assert store.count(clusters) == 0
