"""`curate annotate simulate` against the real embedded Argilla server: simulated annotators stand in for people,
and everything made from their ratings says so (user names, the store, the simulate run, exports)."""
from __future__ import annotations

import uuid

import sqlalchemy as sa

from annotations.tables import rating_responses, ratings
from curation.synthetic import write_jsonl


def test_simulated_ratings_come_home_marked_and_export_as_simulated(cli, store, tmp_path, argilla_env):
    from loops.simulate import simulated_annotators

    dataset, workspace = f"sim-{uuid.uuid4().hex[:8]}", f"ws-{uuid.uuid4().hex[:6]}"  # the server is shared
    write_jsonl(tmp_path / "traffic.jsonl", 200, siblings=0.3)
    (tmp_path / "other.jsonl").write_text('{"id": "real-1", "messages": [{"role": "user", "content": "Hi there"}, '
                                          '{"role": "assistant", "content": "Hello! How can I help?"}]}\n')
    cli.json("ingest", tmp_path / "traffic.jsonl", tmp_path / "other.jsonl")
    with store.connect() as conn:
        ids = sorted(conn.execute(sa.text("SELECT id FROM conversations WHERE id NOT LIKE '%-regen'")).scalars())[:24]
    pushed = cli.json("annotate", "push", "--dataset", dataset, "--workspace", workspace, "--ids", ",".join(ids + ["real-1"]), "--pairs")
    assert pushed["pushed"] == 25

    result = cli.json("annotate", "simulate", "--dataset", dataset, "--workspace", workspace, "--seed", "3")
    assert result["simulated"] is True and result["records"] == 25 and result["responses"] == 50
    assert result["without_truth"] == 1  # real-1 is not sample traffic: rated as good, and the output says so
    assert result["annotators"] == ["simulated-annotator-1", "simulated-annotator-2", "simulated-annotator-3"]
    text = cli("annotate", "simulate", "--dataset", dataset, "--workspace", workspace, "--seed", "3").stdout
    assert "not people" in text and "1 of the 25 records have no planted failure" in text  # and it is idempotent

    pulled = cli.json("annotate", "pull", "--dataset", dataset, "--workspace", workspace)
    assert pulled["responses"] == 50
    with store.connect() as conn:
        names = set(conn.execute(sa.select(rating_responses.c.annotator).where(rating_responses.c.dataset == dataset)).scalars())
        consensus = conn.execute(sa.select(sa.func.count()).select_from(ratings).where(ratings.c.dataset == dataset)).scalar_one()
        user_ids = simulated_annotators(conn)
    assert names and all(n.startswith("simulated-annotator-") for n in names) and consensus == 25
    assert len(user_ids) == 3  # the simulate run keeps their Argilla ids: a pull that cannot list users stores those

    exported = cli.json("export", "preferences", "--out", tmp_path / "prefs", "--dataset", dataset, "--format", "jsonl")
    assert exported["pairs"] > 0 and exported["simulated"] == exported["pairs"]
    rows = [line for split in ("train", "test") for line in (tmp_path / "prefs" / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) == exported["pairs"] and all('"simulated":true' in row for row in rows)
