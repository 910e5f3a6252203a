"""Ingest loses nothing without a word: a reused id with other content, a truncated .gz, a byte order mark."""
from __future__ import annotations

import codecs
import gzip
import zlib

import orjson
import pytest
import sqlalchemy as sa

from curation.ingest import ingest, ingest_records
from curation.store import loads
from curation.store.tables import conversations, feedback, runs
from tests.test_ingest import chat, quarantine_entries, write_lines


def answer(i, text, **extra):
    """chat(i) with another answer: the same id, other content."""
    record = chat(i, **extra)
    record["messages"] = [record["messages"][0], {"role": "assistant", "content": text}]
    return record


def stored_messages(store, conv_id):
    with store.connect() as conn:
        return loads(conn.execute(sa.select(conversations.c.messages).where(conversations.c.id == conv_id)).scalar_one())


def test_reused_id_with_other_content_is_quarantined_as_a_conflict(store, tmp_path):
    ingest(store, [write_lines(tmp_path / "first.jsonl", [chat(1), chat(2)])])
    reordered = {"messages": [{"content": m["content"], "role": m["role"]} for m in chat(1)["messages"]], "id": "c1"}
    second = write_lines(tmp_path / "second.jsonl", [
        chat(1),  # line 1: a true duplicate
        reordered,  # line 2: the same content with its keys in another order: still a duplicate
        answer(1, "another answer", feedback=[{"type": "thumbs_down"}]),  # line 3: conflicts with the stored c1
        chat(3),  # line 4: new
        answer(3, "a different answer"),  # line 5: conflicts with line 4 of the same file (and batch)
        {**chat(2), "model": "other-model"},  # line 6: other content outside the messages is a conflict too
    ])
    summary = ingest(store, [second])
    assert summary["read"] == 6 and summary["ingested"] == 1 and summary["duplicates"] == 2
    assert summary["quarantined"] == 3 and summary["conflicts"] == 3
    entries = quarantine_entries(summary)
    assert [(e["file"], e["line"], e["conflict"]["id"]) for e in entries] == [
        (str(second), 3, "c1"), (str(second), 5, "c3"), (str(second), 6, "c2")]
    for entry in entries:
        stored, new = entry["conflict"]["stored"], entry["conflict"]["new"]
        assert stored != new and len(stored) == len(new) == 32
        assert entry["reason"].startswith("conflict:") and stored in entry["reason"] and new in entry["reason"]
    assert orjson.loads(entries[0]["raw"])["messages"][1]["content"] == "another answer"
    assert orjson.loads(entries[0]["raw"])["feedback"] == [{"type": "thumbs_down"}]
    # the stored conversations are untouched, and the conflicting record's feedback is not pinned on them
    assert stored_messages(store, "c1")[1]["content"] == "answer 1"
    assert stored_messages(store, "c3")[1]["content"] == "answer 3"
    assert store.count(feedback) == 0
    # the same conflict ingested again is named with the same two hashes
    again = ingest(store, [second])
    assert [e["conflict"] for e in quarantine_entries(again)] == [e["conflict"] for e in entries]


def test_a_conflict_inside_one_batch_and_from_the_logging_api(store):
    summary = ingest_records(store, [chat(7), answer(7, "changed"), chat(7)])
    assert summary["ingested"] == 1 and summary["duplicates"] == 1 and summary["conflicts"] == 1
    entry = quarantine_entries(summary)[0]
    assert entry["file"] == "api" and entry["line"] == 2 and entry["conflict"]["id"] == "c7"


def test_content_hash_ids_repeat_as_duplicates_whatever_the_other_fields(store, tmp_path):
    messages = chat(1)["messages"]
    path = write_lines(tmp_path / "a.jsonl", [{"messages": messages, "created_at": "2026-01-01T00:00:00Z"},
                                             {"messages": messages, "created_at": "2026-01-02T00:00:00Z"}])
    summary = ingest(store, [path])
    assert summary["ingested"] == 1 and summary["duplicates"] == 1 and summary["quarantined"] == 0


def _truncated_gzip(path, records, keep: float):
    """A real .jsonl.gz cut at `keep` of its bytes; returns how many whole lines a reader can still get from it."""
    data = b"".join(orjson.dumps(r) + b"\n" for r in records)
    whole = gzip.compress(data, compresslevel=1)
    cut = whole[: int(len(whole) * keep)]
    path.write_bytes(cut)
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    assert 0 < readable.count(b"\n") < len(records)
    return readable.count(b"\n")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_truncated_gzip_keeps_every_line_before_the_damage(store, tmp_path, monkeypatch, workers):
    import curation.ingest.job as ingest_module
    from curation.config import IngestSettings
    from curation.synthetic import generate

    records = list(generate(3_000, seed=5))
    path = tmp_path / "cut.jsonl.gz"
    complete = _truncated_gzip(path, records, keep=0.6)
    monkeypatch.setattr(ingest_module, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(ingest_module, "CHUNK_LINES", 300)
    summary = ingest(store, [path], settings=IngestSettings(batch_size=400, workers=workers), progress=False)
    assert summary["ingested"] == complete == store.count(conversations)
    assert summary["read"] == complete + 1 and summary["quarantined"] == 1
    [entry] = quarantine_entries(summary)
    assert entry["file"] == str(path) and entry["line"] == complete + 1
    assert entry["reason"].startswith(f"file truncated after line {complete}: ")
    assert summary["truncated"] == [{"file": str(path), "line": complete + 1, "reason": entry["reason"]}]
    with store.connect() as conn:
        status, stored = conn.execute(sa.select(runs.c.status, runs.c.summary)).one()
    assert status == "partial" and orjson.loads(stored)["ingested"] == complete


def test_a_truncated_gzip_through_the_cli_exits_0_and_says_where(cli, store, tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    complete = _truncated_gzip(path, [chat(i) for i in range(2_000)], keep=0.5)
    summary = cli.json("ingest", path)
    assert summary["ingested"] == complete and summary["quarantined"] == 1
    assert cli("ingest", path, "--strict", code=1).exit_code == 1  # --strict still refuses a damaged file


def test_a_byte_order_mark_is_not_a_bad_record(cli, store, tmp_path):
    lines = codecs.BOM_UTF8 + orjson.dumps(chat(1)) + b"\n" + orjson.dumps(chat(2)) + b"\n"
    (tmp_path / "bom.jsonl").write_bytes(lines)
    (tmp_path / "bom.json").write_bytes(lines.replace(b'"c1"', b'"c3"').replace(b'"c2"', b'"c4"'))
    with gzip.open(tmp_path / "bom.jsonl.gz", "wb") as out:
        out.write(lines.replace(b'"c1"', b'"c5"').replace(b'"c2"', b'"c6"'))
    for name in ("bom.jsonl", "bom.json", "bom.jsonl.gz"):
        summary = cli.json("ingest", tmp_path / name)
        assert summary["quarantined"] == 0 and summary["ingested"] == 2, (name, summary)
    assert store.count(conversations) == 6


def test_a_byte_order_mark_in_preference_pairs_is_skipped(tmp_path):
    from loops.reward.data import read_rows

    pair = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
    (tmp_path / "pairs.jsonl").write_bytes(codecs.BOM_UTF8 + orjson.dumps(pair) + b"\n")
    assert read_rows(tmp_path / "pairs.jsonl") == [pair]


@pytest.mark.parametrize("first", [b"\x1f\x8b", b"\x1f\x8b\x08garbage", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xffjunk"])
def test_a_plain_file_whose_first_bad_line_looks_like_gzip_is_read_as_text(cli, store, tmp_path, first):
    """The fuzz test's find: a plain JSONL file whose first (bad) line starts with gzip's magic bytes was taken for a
    gzip stream, and every line after it was lost. The bad line is quarantined; the good ones are kept."""
    path = tmp_path / "plain.jsonl"
    path.write_bytes(first + b"\n" + b"".join(orjson.dumps(chat(i)) + b"\n" for i in range(5)))
    summary = cli.json("ingest", path)
    assert summary["read"] == 6 and summary["ingested"] == 5 and summary["quarantined"] == 1, summary
    assert store.count(conversations) == 5
