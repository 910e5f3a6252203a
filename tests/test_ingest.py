"""Ingest: every format, idempotence, quarantine with reasons, and the real oasst1 export."""
from __future__ import annotations

import gzip
from collections import Counter

import orjson
import pytest
import sqlalchemy as sa

from curation.ingest import ingest
from curation.store.tables import conversations, feedback


def write_lines(path, records):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records))
    return path


def chat(i, **extra):
    return {"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                        {"role": "assistant", "content": f"answer {i}"}], **extra}


def quarantine_entries(summary):
    return [orjson.loads(line) for line in open(summary["quarantine_file"], "rb")]


@pytest.mark.smoke
def test_oasst_every_message_accounted_threads_and_thumbs(cli, store, oasst_file):
    first = cli.json("ingest", oasst_file)
    source = [orjson.loads(line) for line in open(oasst_file, "rb")]
    assert first["read"] == len(source) == 2022
    assert first["read"] == first["ingested"] + first["duplicates"] + first["quarantined"]
    assert first["duplicates"] == 0
    reasons = Counter(e["reason"].split(":")[0] for e in quarantine_entries(first))
    assert reasons["deleted in the source export"] == sum(1 for m in source if m["deleted"])
    assert reasons["missing parent"] >= 3  # messages whose parent is outside the English subset
    # the quarantined messages and the placed ones are disjoint and together are the whole file
    with store.connect() as conn:
        rows = conn.execute(sa.select(conversations.c.id, conversations.c.messages, conversations.c.metadata)).all()
    placed = {mid for _, _, meta in rows for mid in orjson.loads(meta)["message_ids"]}
    quarantined = {orjson.loads(e["raw"])["message_id"] for e in quarantine_entries(first)}
    assert placed.isdisjoint(quarantined)
    assert placed | quarantined == {m["message_id"] for m in source}
    by_id = {m["message_id"]: m for m in source}
    for _, messages, meta in rows:  # threads: root-to-leaf paths that end on an assistant reply
        msgs, meta = orjson.loads(messages), orjson.loads(meta)
        assert msgs[-1]["role"] == "assistant" and msgs[0]["role"] == "user"
        ids = meta["message_ids"]
        assert all(by_id[b]["parent_id"] == a for a, b in zip(ids, ids[1:]))
        assert set(meta["oasst_review"]) == {i for i in ids if by_id[i]["role"] == "assistant"}
    # thumbs: every -1 emoji on a placed assistant message becomes thumbs_down on that turn; labels never do
    with store.connect() as conn:
        fb = conn.execute(sa.select(feedback.c.conversation_id, feedback.c.type, feedback.c.value, feedback.c.turn)).all()
    assert {t for _, t, _, _ in fb} <= {"thumbs_up", "thumbs_down", "flag"}
    expected_down = sum(
        1 for _, _, meta in rows for i, mid in enumerate(orjson.loads(meta)["message_ids"])
        if "-1" in (by_id[mid].get("emojis") or {}).get("name", []) and by_id[mid]["role"] == "assistant"
    )
    assert sum(1 for _, t, _, _ in fb if t == "thumbs_down") == expected_down > 0
    second = cli.json("ingest", oasst_file)
    assert second["ingested"] == 0 and second["conversations"] == 0
    assert second["duplicates"] == first["ingested"]


def test_formats_sharegpt_gzip_parquet_hf_and_events(cli, store, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_lines(tmp_path / "sg.jsonl", [{"id": "s1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}])
    with gzip.open(tmp_path / "chat.jsonl.gz", "wb") as out:
        out.write(orjson.dumps(chat(1)) + b"\n" + orjson.dumps(chat(2)) + b"\n")
    pq.write_table(pa.Table.from_pylist([chat(3), chat(4)]), tmp_path / "chat.parquet")
    datasets.Dataset.from_list([chat(5)]).save_to_disk(str(tmp_path / "hfds"))
    write_lines(tmp_path / "events.jsonl", [{"conversation_id": "c1", "type": "thumbs_down"}, {"conversation_id": "c3", "type": "rating", "value": 2}])
    for name in ("sg.jsonl", "chat.jsonl.gz", "chat.parquet", "hfds", "events.jsonl"):
        summary = cli.json("ingest", tmp_path / name)
        assert summary["quarantined"] == 0 and summary["ingested"] == summary["read"] > 0, (name, summary)
    with store.connect() as conn:
        ids = set(conn.execute(sa.select(conversations.c.id)).scalars())
        kinds = Counter(conn.execute(sa.select(feedback.c.type)).scalars())
    assert ids == {"s1", "c1", "c2", "c3", "c4", "c5"}
    assert kinds == {"thumbs_down": 1, "rating": 1}
    again = cli.json("ingest", tmp_path / "events.jsonl")
    assert again["duplicates"] == 2 and again["ingested"] == 0


BAD = [
    (b'{"messages": [', "malformed JSON"),
    (b'{"id": "x", "messages": [{"role": "user", "content": "caf\xe9"}]}', "invalid UTF-8"),
    (orjson.dumps({"id": "m"}), "unrecognised record"),
    (orjson.dumps({"messages": []}), "'messages' is empty"),
    (orjson.dumps({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}), "unknown role"),
    (orjson.dumps({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}), "content must be a string"),
    (orjson.dumps({"messages": [{"role": "user", "content": "only a question"}]}), "no assistant turn"),
    (orjson.dumps({**chat(9), "created_at": "last tuesday"}), "bad timestamp"),
    (orjson.dumps({**chat(10), "feedback": [{"type": "love"}]}), "unknown type"),
    (orjson.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * 600}]}), "over the limit"),
    (b"[1, 2, 3]", "not a JSON object"),
]


def test_bad_records_quarantined_with_reason_and_good_ones_kept(cli, store, tmp_path):
    lines = [orjson.dumps(chat(0))] + [raw for raw, _ in BAD] + [orjson.dumps(chat(1))]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    summary = cli.json("ingest", path, "--max-chars", "500")
    assert summary["read"] == len(lines)
    assert summary["ingested"] == 2 and summary["quarantined"] == len(BAD)
    entries = quarantine_entries(summary)
    for entry, (raw, reason) in zip(entries, BAD):
        assert reason in entry["reason"], entry
        assert entry["file"] == str(path)
        assert entry["raw"] == raw.decode("utf-8", "backslashreplace")
    assert [e["line"] for e in entries] == list(range(2, 2 + len(BAD)))
    assert store.count(conversations) == 2


def test_strict_exits_1_but_keeps_valid_records(cli, store, tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [chat(1), b"{oops"])
    result = cli("ingest", path, "--strict", "--json", code=1)
    assert orjson.loads(result.stdout)["quarantined"] == 1
    assert "quarantined" in result.stderr and "--strict" in result.stderr
    assert store.count(conversations) == 1


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such file"),
    (lambda p: (p.mkdir(), (p / "a.jsonl").write_text("{}"), (p / "b.csv").write_text("x")), "mixes files"),
    (lambda p: p.write_text("hello"), "unknown file type"),
])
def test_unusable_paths_get_one_line_errors(cli, tmp_path, setup, message):
    target = tmp_path / "target.txt"
    setup(target)
    result = cli("ingest", target, code=1)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_format_is_a_usage_error(cli, tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [chat(1)])
    assert "Invalid value for '--format'" in cli("ingest", path, "--format", "yaml", code=2).stderr


def test_content_hash_ids_and_salted_user_hash(home, store, tmp_path, monkeypatch):
    record = {"messages": chat(1)["messages"], "user_id": "alice@example.com"}
    path = write_lines(tmp_path / "a.jsonl", [record, record])
    summary = ingest(store, [path])
    assert summary["ingested"] == 1 and summary["duplicates"] == 1
    with store.connect() as conn:
        cid, user_hash = conn.execute(sa.select(conversations.c.id, conversations.c.user_hash)).one()
    assert len(cid) == 32 and "alice" not in user_hash
    monkeypatch.setenv("CURATE_USER_SALT", "another-salt")
    path2 = write_lines(tmp_path / "b.jsonl", [{**record, "id": "explicit"}])
    ingest(store, [path2])
    with store.connect() as conn:
        other = conn.execute(sa.select(conversations.c.user_hash).where(conversations.c.id == "explicit")).scalar_one()
    assert other != user_hash


def test_gzip_sample_ingests_in_batches_under_one_run(store, tmp_path):
    from curation.config import IngestSettings
    from curation.synthetic import write_jsonl

    path = write_jsonl(tmp_path / "t.jsonl.gz", 3_000, seed=3)
    summary = ingest(store, [path], settings=IngestSettings(batch_size=500))
    assert summary["ingested"] == 3_000
    with store.connect() as conn:
        runs = conn.execute(sa.select(conversations.c.run_id).distinct()).scalars().all()
    assert runs == [summary["run_id"]]


def test_parallel_validation_matches_serial(home, store, tmp_path, monkeypatch):
    import curation.ingest.job as ingest_module
    from curation.config import IngestSettings
    from curation.synthetic import generate

    records = [orjson.dumps(r) for r in generate(4_000, seed=8)]
    records[10:10] = [raw for raw, _ in BAD[:7]]  # bad lines inside the first chunk
    path = write_lines(tmp_path / "big.jsonl", records + [orjson.dumps(chat(1)), orjson.dumps(chat(1))])
    monkeypatch.setattr(ingest_module, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(ingest_module, "CHUNK_LINES", 300)
    summary = ingest(store, [path], settings=IngestSettings(workers=2, batch_size=700))
    assert summary["read"] == 4_009 and summary["quarantined"] == 7
    assert summary["ingested"] == 4_001 and summary["duplicates"] == 1
    reasons = [e["reason"] for e in quarantine_entries(summary)]
    assert reasons[0].startswith("malformed JSON") and reasons[1].startswith("invalid UTF-8")
    assert [e["line"] for e in quarantine_entries(summary)] == list(range(11, 18))
    assert store.count(conversations) == 4_001


def test_utc_fast_path_matches_the_general_parser():
    import datetime as dt

    from curation.ingest.records import Reject, parse_time

    def general(text):  # the general path: parse (naive = UTC), convert to UTC, write the store's text
        moment = dt.datetime.fromisoformat(text)
        moment = moment.replace(tzinfo=moment.tzinfo or dt.timezone.utc).astimezone(dt.timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    for text in ("2026-11-01T08:27:31Z", "2026-11-01T08:27:31+00:00", "2024-02-29T23:59:59.123456Z",
                 "2026-11-01T08:27:31.000001+00:00", "2026-11-01T10:27:31+02:00", "2026-11-01 08:27:31"):
        assert parse_time(text, "at") == general(text)
    for bad in ("2026-13-01T08:27:31Z", "2025-02-29T00:00:00Z", "2026-11-01T24:00:00Z"):
        with pytest.raises(Reject, match="bad timestamp"):
            parse_time(bad, "at")


def test_a_failing_write_fails_the_run_and_keeps_committed_batches(store, tmp_path, monkeypatch):
    import curation.ingest.job as ingest_module
    from curation.config import IngestSettings
    from curation.synthetic import write_jsonl
    from curation.store.tables import runs

    real, calls = ingest_module.insert_tuples, []

    def fail_third_batch(conn, table, columns, rows, *args):  # a disk that fills during the third batch
        calls.append(table.name)
        if calls.count("conversations") == 3:
            raise sa.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))
        return real(conn, table, columns, rows, *args)

    monkeypatch.setattr(ingest_module, "insert_tuples", fail_third_batch)
    path = write_jsonl(tmp_path / "t.jsonl", 2_000, seed=4)
    with pytest.raises(sa.exc.OperationalError, match="disk is full"):
        ingest(store, [path], settings=IngestSettings(batch_size=300), progress=False)
    assert store.count(conversations) == 600  # the two committed batches, nothing of the failed one
    with store.connect() as conn:
        status, summary = conn.execute(sa.select(runs.c.status, runs.c.summary)).one()
    assert status == "failed" and orjson.loads(summary)["ingested"] == 600


def test_feedback_for_an_unknown_conversation_waits_for_it(cli, store, tmp_path):
    """An event whose conversation is not in the store is kept and reported as waiting (events may arrive first,
    e.g. a feedback file ingested before the log it is about); once the conversation comes, it is the conversation's."""
    from curation.signals import score_failures
    from curation.store.failure_tables import failure_scores

    write_lines(tmp_path / "events.jsonl", [{"conversation_id": "c1", "type": "thumbs_down"},
                                            {"conversation_id": "later", "type": "flag"}])
    write_lines(tmp_path / "chat.jsonl", [chat(1)])
    cli.json("ingest", tmp_path / "chat.jsonl")
    first = cli.json("ingest", tmp_path / "events.jsonl")
    assert (first["ingested"], first["feedback_events"], first["feedback_waiting"]) == (2, 2, 1)
    write_lines(tmp_path / "more.jsonl", [{"conversation_id": "never", "type": "abandoned"}])
    assert "1 of them wait for their conversation" in cli("ingest", tmp_path / "more.jsonl").stdout
    write_lines(tmp_path / "late.jsonl", [{"id": "later", "messages": chat(2)["messages"]}, chat(3)])
    assert cli.json("ingest", tmp_path / "late.jsonl")["feedback_waiting"] == 0
    score_failures(store)
    with store.connect() as conn:
        scores = dict(conn.execute(sa.select(failure_scores.c.conversation_id, failure_scores.c.failure_score)).all())
    assert scores["later"] > 0 == scores["c3"]  # the waiting flag counts once its conversation is there (c3: no feedback)
