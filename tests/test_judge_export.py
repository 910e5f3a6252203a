"""`curate export preferences --include-judge`: judge-derived pairs, each marked source=judge in its row, counted in
the manifest and named in the card; without the flag no judge pair is exported, and judge ratings never count as
human ratings."""
from __future__ import annotations

import json
from itertools import combinations

from curation.ingest import ingest_records
from curation.judge import latest_judgements
from tests.chat_fault_server import FaultServer

QUESTIONS = ["How do I boil an egg?", "What is the capital of Peru?", "Name a prime number above 10."]


def traffic() -> list[dict]:
    """Three contexts, four different replies each (as regenerated or generated siblings would be)."""
    return [{"id": f"q{q}-r{r}", "messages": [{"role": "user", "content": text},
                                              {"role": "assistant", "content": f"Reply {r} to {text}"}]}
            for q, text in enumerate(QUESTIONS) for r in range(4)]


def test_judge_pairs_are_marked_and_only_with_the_flag(cli, store, tmp_path):
    ingest_records(store, traffic())
    with FaultServer(default="judge") as server:
        cli.json("judge", "--all", "--url", server.url, "--model", "judge-m")
    with store.connect() as conn:
        judged = latest_judgements(conn)
    expected = 0
    for q in range(len(QUESTIONS)):
        for a, b in combinations(range(4), 2):
            expected += abs(judged[f"q{q}-r{a}"]["helpfulness"] - judged[f"q{q}-r{b}"]["helpfulness"]) >= 0.5
    assert expected > 0  # the fault server's judgements differ within a context

    # without the flag: judge ratings are not human preferences, so there is nothing to export
    assert "no" in cli("export", "preferences", "--out", tmp_path / "plain", code=1).stderr.lower()
    result = cli.json("export", "preferences", "--out", tmp_path / "rlaif", "--format", "jsonl", "--include-judge",
                      "--test-size", "0")
    assert result["pairs"] == expected
    rows = [json.loads(line) for line in (tmp_path / "rlaif" / "train.jsonl").open()]
    assert len(rows) == expected and all(r["source"] == "judge" and r["rule"] == "judge" for r in rows)
    version = next(iter(judged.values()))["rubric_version"]
    assert all(r["annotators"] == [f"judge-m@{version}"] and not r["simulated"] for r in rows)
    for r in rows:
        chosen, rejected = judged[r["conversation_id_chosen"]], judged[r["conversation_id_rejected"]]
        assert r["margin"] == chosen["helpfulness"] - rejected["helpfulness"] > 0
    manifest = json.loads((tmp_path / "rlaif" / "manifest.json").read_text())
    assert manifest["counts"]["judge"] == expected
    card = (tmp_path / "rlaif" / "README.md").read_text()
    assert f"{expected} pairs come from the LLM judge" in card and "source` = `judge`" in card
