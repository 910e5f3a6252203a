"""`curate export conversations` and the sample traffic generator."""
from __future__ import annotations

from collections import Counter

import orjson
import pyarrow.parquet as pq

from curation.synthetic import FAILURE_MODES, generate, write_jsonl


def test_sample_is_deterministic_and_plants_every_failure_mode():
    first, again, other = list(generate(3_000, seed=5)), list(generate(3_000, seed=5)), list(generate(50, seed=6))
    assert first == again and first[:50] != other
    modes = Counter(r["metadata"]["demo_truth"]["failure"] for r in first)
    assert set(FAILURE_MODES) <= set(modes)
    failed = [r for r in first if r["metadata"]["demo_truth"]["failure"]]
    ok = [r for r in first if not r["metadata"]["demo_truth"]["failure"]]
    down = lambda rs: sum(any(f["type"] == "thumbs_down" for f in r["feedback"]) for r in rs) / len(rs)
    assert down(failed) > 5 * down(ok)  # planted failures carry their own feedback
    assert all(r["messages"][-1]["role"] == "assistant" for r in first)


def test_export_jsonl_and_parquet_have_one_row_per_conversation(cli, tmp_path):
    cli("ingest", write_jsonl(tmp_path / "traffic.jsonl", 300, seed=2))
    jsonl = cli.json("export", "conversations", "--out", tmp_path / "c.jsonl")
    parquet = cli.json("export", "conversations", "--out", tmp_path / "c.parquet")
    assert jsonl["rows"] == parquet["rows"] == 300
    rows = [orjson.loads(line) for line in open(tmp_path / "c.jsonl", "rb")]
    assert len({r["id"] for r in rows}) == 300
    assert {"id", "messages", "model", "created_at", "feedback"} <= set(rows[0])
    assert any(f["type"] == "thumbs_down" for r in rows for f in r["feedback"])
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.num_rows == 300 and table.column("messages")[0].as_py()[-1]["role"] == "assistant"


def test_export_refuses_unknown_extension(cli, tmp_path):
    assert "choose a .jsonl" in cli("export", "conversations", "--out", tmp_path / "c.csv", code=1).stderr
