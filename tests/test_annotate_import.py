"""`curate annotate import`: ratings from JSONL, CSV and Parquet files, stored like pulled ones, with a quarantine."""
from __future__ import annotations

import codecs
import stat
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from annotations.rating_import import import_ratings, imported_runs
from annotations.tables import annotation_records, rating_responses, ratings
from curation.store import loads

CONTEXT_A = [{"role": "user", "content": "What is the boiling point of water at sea level in Celsius?"}]
CONTEXT_B = [{"role": "user", "content": "Name a prime number between 10 and 20."}]
CONVERSATIONS = [
    ("c1", CONTEXT_A, "Water boils at 100 degrees Celsius at sea level."),
    ("c2", CONTEXT_A, "It boils at about 50 degrees."),
    ("c3", CONTEXT_B, "13 is a prime number between 10 and 20."),
    ("c4", CONTEXT_B, "15."),
]


@pytest.fixture
def convs(cli, tmp_path: Path) -> Path:
    path = tmp_path / "traffic.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": cid, "messages": ctx + [{"role": "assistant", "content": reply}]})
                              + b"\n" for cid, ctx, reply in CONVERSATIONS))
    assert cli.json("ingest", path)["ingested"] == len(CONVERSATIONS)
    return path


def jsonl(path: Path, rows: list) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


def rows_of(store, table: sa.Table) -> list[dict]:
    with store.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table))]


def test_jsonl_import_is_stored_like_a_pull_and_a_second_import_adds_nothing(store, convs, cli, tmp_path):
    path = jsonl(tmp_path / "labels.jsonl", [
        {"conversation_id": "c1", "helpfulness": 4, "correctness": 4, "annotator": "alice", "rated_at": "2024-05-01T12:00:00Z"},
        {"conversation_id": "c1", "helpfulness": 3, "correctness": 4, "annotator": "bob"},
        {"conversation_id": "c2", "helpfulness": 1, "correctness": 0, "coherence": 3, "annotator": "alice"},
    ])
    first = cli.json("annotate", "import", path, "--dataset", "labels")
    assert {k: first[k] for k in ("imported", "duplicates", "quarantined", "read", "conversations", "new_records")} == \
        {"imported": 3, "duplicates": 0, "quarantined": 0, "read": 3, "conversations": 2, "new_records": 2}
    assert first["quarantine_file"] is None and first["source"] == "import:labels.jsonl"

    responses = {r["id"]: r for r in rows_of(store, rating_responses)}
    assert set(responses) == {"c1:alice", "c1:bob", "c2:alice"}
    alice = responses["c1:alice"]
    assert alice["status"] == "submitted" and alice["record_id"] == "c1" and alice["dataset"] == "labels"
    assert alice["updated_at"] == "2024-05-01T12:00:00.000000Z" and alice["verbosity"] is None
    consensus = {r["record_id"]: r for r in rows_of(store, ratings)}
    assert consensus["c1"]["n_annotators"] == 2 and consensus["c1"]["helpfulness"] == 3.5
    assert loads(consensus["c1"]["annotators"]) == ["alice", "bob"] and consensus["c2"]["coherence"] == 3
    records = rows_of(store, annotation_records)
    assert {(r["record_id"], r["dataset"], r["strategy"]) for r in records} == {("c1", "labels", "import"),
                                                                                ("c2", "labels", "import")}
    # provenance: every row points at an import run that names the file
    with store.connect() as conn:
        assert imported_runs(conn) == {first["run_id"]: "import:labels.jsonl"}
    assert {r["run_id"] for r in responses.values()} == {first["run_id"]}

    again = cli.json("annotate", "import", path, "--dataset", "labels")
    assert (again["imported"], again["duplicates"], again["quarantined"], again["new_records"]) == (0, 3, 0, 0)
    assert {r["id"]: r["run_id"] for r in rows_of(store, rating_responses)} == {k: first["run_id"] for k in responses}
    assert len(rows_of(store, ratings)) == 2


def test_csv_with_a_byte_order_mark_and_parquet(store, convs, cli, tmp_path):
    csv_path = tmp_path / "sheet.csv"
    csv_path.write_bytes(codecs.BOM_UTF8 + "conversation_id,helpfulness,correctness,verbosity,note\r\n"
                         "c1,4,4,,fine\r\nc2,1,,2,\"short, wrong\"\r\n".encode())
    result = import_ratings(store, csv_path, "sheet")
    assert (result["imported"], result["quarantined"]) == (2, 0)
    responses = {r["id"]: r for r in rows_of(store, rating_responses)}
    assert set(responses) == {"c1:import:sheet.csv", "c2:import:sheet.csv"}  # no annotator column: the file names one
    assert responses["c2:import:sheet.csv"]["correctness"] is None and responses["c2:import:sheet.csv"]["verbosity"] == 2

    import pandas as pd

    parquet = tmp_path / "export.parquet"
    # a column with a blank is float in pandas: 3.0 is the integer 3, NaN is "not rated"
    pd.DataFrame({"conversation_id": ["c3", "c4"], "helpfulness": [3.0, float("nan")], "coherence": [4.0, 1.0],
                  "annotator": ["carol", "carol"]}).to_parquet(parquet)
    out = cli.json("annotate", "import", parquet, "--dataset", "sheet", "--annotator", "unused")
    assert (out["imported"], out["quarantined"]) == (2, 0)
    c4 = {r["id"]: r for r in rows_of(store, rating_responses)}["c4:carol"]
    assert c4["helpfulness"] is None and c4["coherence"] == 1

    named = jsonl(tmp_path / "more.jsonl", [{"conversation_id": "c3", "helpfulness": 2}])
    assert cli.json("annotate", "import", named, "--dataset", "sheet", "--annotator", "dave")["imported"] == 1
    assert "c3:dave" in {r["id"] for r in rows_of(store, rating_responses)}


def test_bad_rows_are_quarantined_with_file_line_and_reason(store, convs, cli, tmp_path):
    import_ratings(store, jsonl(tmp_path / "before.jsonl", [{"conversation_id": "c3", "helpfulness": 3, "annotator": "ann"}]),
                   "bad")
    path = jsonl(tmp_path / "bad.jsonl", [
        {"conversation_id": "c1", "helpfulness": 4, "annotator": "ann"},  # 1: fine
        {"conversation_id": "nope", "helpfulness": 2, "annotator": "ann"},  # 2: unknown conversation
        {"conversation_id": "c2", "helpfulness": 5, "annotator": "ann"},  # 3: outside 0–4
        {"conversation_id": "c2", "correctness": 2.5, "annotator": "ann"},  # 4: not an integer
        {"conversation_id": "c2", "coherence": "good", "annotator": "ann"},  # 5: not an integer
        {"conversation_id": "c2", "annotator": "ann", "comment": "no rating"},  # 6: no attribute
        b'{"conversation_id": "c2", "helpfulness": 3',  # 7: malformed line
        {"conversation_id": "c1", "helpfulness": 1, "annotator": "ann"},  # 8: conflicts with line 1
        {"conversation_id": "c3", "helpfulness": 0, "annotator": "ann"},  # 9: conflicts with the store
        {"conversation_id": "c3", "helpfulness": 3, "annotator": "ann"},  # 10: duplicate of the store's
        {"conversation_id": "c2", "helpfulness": -1, "annotator": "ann"},  # 11: outside 0–4
        {"conversation_id": "c4", "helpfulness": True, "annotator": "ann"},  # 12: not an integer
        {"conversation_id": "c4", "helpfulness": 2, "annotator": "ann", "rated_at": "yesterday"},  # 13: bad time
    ])
    result = cli.json("annotate", "import", path, "--dataset", "bad")
    assert (result["read"], result["imported"], result["duplicates"], result["quarantined"]) == (13, 1, 1, 11)
    quarantine = Path(result["quarantine_file"])
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o600
    entries = [orjson.loads(line) for line in quarantine.read_bytes().splitlines()]
    assert all(e["file"] == str(path) for e in entries)
    reasons = {e["line"]: e["reason"] for e in entries}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]
    assert reasons[2].startswith("unknown conversation id 'nope'") and "ingest" in reasons[2]
    assert reasons[3].startswith("helpfulness 5 is outside 0–4") and reasons[11].startswith("helpfulness -1 is outside")
    assert reasons[4].startswith("correctness 2.5 is not an integer") and reasons[5].startswith("coherence 'good' is not")
    assert reasons[12].startswith("helpfulness True is not an integer")
    assert reasons[6].startswith("no rating") and reasons[7].startswith("malformed JSON")
    assert "helpfulness 4 in line 1 of this file, and helpfulness 1 here" in reasons[8] and "'ann'" in reasons[8]
    assert "helpfulness 3 in the store (submitted), and helpfulness 0 here" in reasons[9]
    assert reasons[13].startswith("rated_at 'yesterday' is not an ISO 8601 time")
    assert '"conversation_id": "c2", "helpfulness": 3' in entries[5]["raw"]  # the malformed line, as it was
    # the valid row is committed, the stored one is untouched
    values = {r["id"]: r["helpfulness"] for r in rows_of(store, rating_responses)}
    assert values == {"c1:ann": 4, "c3:ann": 3}


def test_a_conversation_of_another_dataset_and_unreadable_files(store, convs, cli, tmp_path):
    import_ratings(store, jsonl(tmp_path / "a.jsonl", [{"conversation_id": "c1", "helpfulness": 3}]), "first")
    result = import_ratings(store, jsonl(tmp_path / "b.jsonl", [{"conversation_id": "c1", "helpfulness": 3}]), "second")
    assert result["quarantined"] == 1
    entry = orjson.loads(Path(result["quarantine_file"]).read_bytes().splitlines()[0])
    assert "is in dataset 'first' already" in entry["reason"] and "--dataset first" in entry["reason"]

    (tmp_path / "wrong.csv").write_text("id,helpfulness\nc1,3\n")
    error = cli("annotate", "import", tmp_path / "wrong.csv", "--dataset", "x", code=1).stderr
    assert error.startswith("error: ") and "wrong.csv: no conversation_id column (columns: id, helpfulness)" in error
    assert len(error.strip().splitlines()) == 1
    (tmp_path / "ratings.txt").write_text("c1 3\n")
    assert "unknown file type" in cli("annotate", "import", tmp_path / "ratings.txt", "--dataset", "x", code=1).stderr
    (tmp_path / "ragged.csv").write_text("conversation_id,helpfulness\nc1,3,extra\nc2,2\nc3,9\n")
    ragged = import_ratings(store, tmp_path / "ragged.csv", "first")
    assert (ragged["imported"], ragged["quarantined"]) == (1, 2)
    entries = [orjson.loads(line) for line in Path(ragged["quarantine_file"]).read_bytes().splitlines()]
    assert entries[0]["line"] == 2 and entries[0]["reason"].startswith("malformed row: 3 fields where the header has 2")
    assert entries[1]["line"] == 4 and entries[1]["reason"].startswith("helpfulness 9 is outside 0–4")


def test_imported_ratings_feed_preference_pairs_and_agreement(store, convs, cli, tmp_path):
    rows = []
    for annotator, shift in (("alice", 0), ("bob", 0), ("simulated-annotator-1", 1)):
        rows += [{"conversation_id": "c1", "helpfulness": 4, "correctness": 4, "annotator": annotator},
                 {"conversation_id": "c2", "helpfulness": 1, "correctness": 0, "annotator": annotator},
                 {"conversation_id": "c3", "helpfulness": 4 - shift, "correctness": 3, "annotator": annotator},
                 {"conversation_id": "c4", "helpfulness": 1 + shift, "correctness": 1, "annotator": annotator}]
    people = [r for r in rows if not r["annotator"].startswith("simulated")]
    result = cli.json("annotate", "import", jsonl(tmp_path / "people.jsonl", people), "--dataset", "rated")
    stats = result["agreement"]
    assert stats["records"] == 4 and stats["multi_annotated"] == 4 and stats["responses"] == 8
    assert stats["before_filter"]["attributes"]["helpfulness"]["kappa"] == pytest.approx(1.0)
    assert set(stats["annotators"]) == {"alice", "bob"}

    out = cli.json("export", "preferences", "--out", tmp_path / "prefs", "--format", "jsonl", "--test-size", "0")
    assert out["pairs"] == 2
    pairs = [orjson.loads(line) for line in (tmp_path / "prefs" / "train.jsonl").read_bytes().splitlines()]
    by_chosen = {p["conversation_id_chosen"]: p for p in pairs}
    assert set(by_chosen) == {"c1", "c3"} and by_chosen["c1"]["conversation_id_rejected"] == "c2"
    assert by_chosen["c1"]["margin"] == 3 and by_chosen["c1"]["rule"] == "ratings"
    assert not any(p["simulated"] for p in pairs)

    # a simulated annotator's imported ratings stay marked simulated
    simulated = [r for r in rows if r["annotator"].startswith("simulated")]
    cli.json("annotate", "import", jsonl(tmp_path / "sim.jsonl", simulated), "--dataset", "rated")
    again = cli.json("export", "preferences", "--out", tmp_path / "prefs2", "--format", "jsonl", "--test-size", "0")
    pairs = [orjson.loads(line) for line in (tmp_path / "prefs2" / "train.jsonl").read_bytes().splitlines()]
    assert again["pairs"] == 2 and all(p["simulated"] for p in pairs)
    status = cli.json("annotate", "status", "--dataset", "rated")  # no Argilla server: the store's side still shows
    assert status["store"]["rated"] == 4 and status["store"]["annotators"]["simulated-annotator-1"]["submitted"] == 4


def test_real_oasst1_ratings_from_the_human_labels(store, cli, oasst_file, tmp_path):
    from benchmarks.oasst_ratings import oasst_ratings, to_scale, write_ratings

    assert cli.json("ingest", oasst_file)["ingested"] > 0
    everything = oasst_ratings(store)
    assert len(everything) > 300
    assert (to_scale(0.625), to_scale(0.5), to_scale(0.0), to_scale(1.0)) == (3, 2, 0, 4)  # halves round up
    labels = tmp_path / "oasst.jsonl"
    assert write_ratings(store, labels, limit=300, seed=1) == 300
    result = cli.json("annotate", "import", labels, "--dataset", "oasst")
    assert (result["imported"], result["duplicates"], result["quarantined"], result["conversations"]) == (300, 0, 0, 300)
    with store.connect() as conn:
        stored = {r.conversation_id: r for r in conn.execute(sa.select(ratings).where(ratings.c.dataset == "oasst"))}
        metadata = dict(conn.execute(sa.text("SELECT id, metadata FROM conversations WHERE id IN "
                                             f"({', '.join(repr(c) for c in sorted(stored))})")).all())
    assert len(stored) == 300 and all(r.n_annotators == 1 for r in stored.values())
    # each stored rating is the mapping of the human labels on the conversation's last reply
    for cid, rating in list(stored.items())[:50]:
        review = [r for r in orjson.loads(metadata[cid])["oasst_review"].values()]
        last = max(r["turn"] for r in review)
        labels_of = next(r for r in review if r["turn"] == last)["labels"]
        assert rating.helpfulness == to_scale(labels_of["quality"])
        if "fails_task" in labels_of:
            assert rating.correctness == to_scale(1 - labels_of["fails_task"])
    again = cli.json("annotate", "import", labels, "--dataset", "oasst")
    assert (again["imported"], again["duplicates"]) == (0, 300)
    # CSV written by the same helper imports the rest; sibling replies rated apart make preference pairs
    rest = tmp_path / "rest.csv"
    write_ratings(store, rest, ids=[r["conversation_id"] for r in everything if r["conversation_id"] not in stored])
    more = cli.json("annotate", "import", rest, "--dataset", "oasst")
    assert more["imported"] == len(everything) - 300 and more["quarantined"] == 0
    pairs = cli.json("export", "preferences", "--out", tmp_path / "prefs", "--format", "jsonl")
    assert pairs["pairs"] > 0


def test_a_failure_mid_write_commits_nothing_of_the_file(store, convs, tmp_path, monkeypatch):
    import annotations.rating_import as imports
    from curation.store.tables import runs

    def write_then_fail(conn, rows, dataset, run_id):  # the disk fills after the rows went in
        real_write(conn, rows, dataset, run_id)
        raise OSError("No space left on device")

    real_write = imports.write_responses
    monkeypatch.setattr(imports, "write_responses", write_then_fail)
    path = jsonl(tmp_path / "labels.jsonl", [{"conversation_id": c, "helpfulness": 2} for c in ("c1", "c2", "c3")])
    with pytest.raises(OSError):
        import_ratings(store, path, "labels")
    assert rows_of(store, rating_responses) == rows_of(store, ratings) == rows_of(store, annotation_records) == []
    assert [r["status"] for r in rows_of(store, runs) if r["kind"] == "import"] == ["failed"]
    monkeypatch.setattr(imports, "write_responses", real_write)
    assert import_ratings(store, path, "labels")["imported"] == 3  # run again: all of it


def test_a_decimal_parquet_rating_is_a_whole_number_like_any_other(store, convs, tmp_path):
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "decimal.parquet"
    values = [decimal.Decimal("3.0"), decimal.Decimal("2.5")]
    pq.write_table(pa.table({"conversation_id": ["c1", "c2"], "helpfulness": pa.array(values, pa.decimal128(3, 1))}), path)
    result = import_ratings(store, path, "labels")
    assert result["imported"] == 1 and result["quarantined"] == 1
    assert {r["record_id"]: r["helpfulness"] for r in rows_of(store, rating_responses)} == {"c1": 3}
    reasons = [orjson.loads(line)["reason"] for line in open(result["quarantine_file"], "rb")]
    assert reasons == ["helpfulness 2.5 is not an integer; ratings are whole numbers 0–4 (blank when not rated)"]


def test_a_rated_at_at_the_calendars_edge_quarantines_its_row_only(store, convs, tmp_path):
    path = jsonl(tmp_path / "edge.jsonl", [
        {"conversation_id": "c1", "helpfulness": 3, "annotator": "a", "rated_at": "0001-01-01T00:00:00+05:00"},
        {"conversation_id": "c2", "helpfulness": 2, "annotator": "a", "rated_at": "9999-12-31T23:59:59-05:00"},
        {"conversation_id": "c3", "helpfulness": 4, "annotator": "a", "rated_at": "0001-01-01T00:00:00Z"},
    ])
    result = import_ratings(store, path, "labels")
    assert result["imported"] == 1 and result["quarantined"] == 2
    assert [r["record_id"] for r in rows_of(store, rating_responses)] == ["c3"]
    reasons = [orjson.loads(line)["reason"] for line in open(result["quarantine_file"], "rb")]
    assert all("outside the years 1–9999 in UTC" in r for r in reasons)


def test_a_long_field_in_an_ignored_csv_column_is_fine(store, convs, tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("conversation_id,helpfulness,comment\nc1,4," + "x" * 200_000 + "\nc2,1,short\n")
    result = import_ratings(store, path, "labels")
    assert result["imported"] == 2 and result["quarantined"] == 0


def test_the_run_is_done_once_the_ratings_are_committed(store, convs, tmp_path, monkeypatch):
    import annotations.rating_import as rating_import
    from curation.store.tables import runs

    def interrupted(responses):  # as when agreement is stopped (Ctrl-C) after the ratings went in
        raise KeyboardInterrupt

    monkeypatch.setattr(rating_import, "agreement", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_ratings(store, jsonl(tmp_path / "r.jsonl", [{"conversation_id": "c1", "helpfulness": 3}]), "labels")
    assert [r["status"] for r in rows_of(store, runs) if r["kind"] == "import"] == ["done"]
    assert len(rows_of(store, rating_responses)) == 1
