"""The HelpSteer2 task template and the annotation tables' migration."""
from __future__ import annotations

import sqlalchemy as sa

from annotations.template import ATTRIBUTES, differences, template


def test_template_has_the_helpsteer2_questions():
    settings = template()
    questions = {q["name"]: q for q in settings["questions"]}
    for name in ATTRIBUTES:
        assert questions[name]["settings"]["type"] == "rating"
        assert [o["value"] for o in questions[name]["settings"]["options"]] == [0, 1, 2, 3, 4]
        assert questions[name]["description"]
    assert [o["value"] for o in questions["preference"]["settings"]["options"]] == ["-3", "-2", "-1", "0", "1", "2", "3"]
    assert questions["rewrite"]["settings"]["type"] == "text" and not questions["rewrite"]["required"]
    assert [f["settings"]["type"] for f in settings["fields"]] == ["chat", "text", "text"]
    assert {m["name"] for m in settings["metadata"]} >= {"cluster_id", "cluster_label", "failure_score", "signals", "model", "date"}
    assert "## Helpfulness" in settings["guidelines"]
    assert settings["distribution"] == {"strategy": "overlap", "min_submitted": 1}


def test_template_parameters():
    settings = template(min_submitted=3, dimensions=768)
    assert settings["distribution"]["min_submitted"] == 3
    assert settings["vectors"][0]["dimensions"] == 768
    assert template(dimensions=None)["vectors"] == []


def test_differences_name_what_differs():
    ours = template()
    assert differences(ours, template()) == []
    theirs = template(min_submitted=2, dimensions=768)
    theirs["questions"] = [q for q in theirs["questions"] if q["name"] != "rewrite"]
    theirs["guidelines"] = "reworded"  # wording may differ
    found = differences(ours, theirs)
    assert "question 'rewrite' is missing" in found
    assert "vector 'conversation_embedding' is 768, ours is 384" in found
    assert "distribution is overlap/2, ours is overlap/1" in found
    assert len(found) == 3


def test_migration_0004_up_and_down(store):
    inspector = sa.inspect(store.engine)
    assert {"annotation_records", "rating_responses", "ratings", "annotation_sync"} <= set(inspector.get_table_names())
    from alembic import command

    from curation.store import _alembic_config

    with store.engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    assert "ratings" not in sa.inspect(store.engine).get_table_names()
    store.migrate("head")
    assert "ratings" in sa.inspect(store.engine).get_table_names()
