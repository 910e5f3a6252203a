"""The whole path of issue 20 through the CLI in a fresh home, with the simulated judge (benchmarks/simulated_judge.py):
ingest oasst1, embed, cluster; `curate judge --all`; push with the judge's suggestions, read back through the Argilla
SDK; import people's ratings for a third; `curate cluster` refits with the judge's features; the report shows κ and
the scorer."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from annotations.tables import annotation_records
from benchmarks.oasst_ratings import write_ratings
from benchmarks.simulated_judge import SimulatedJudge, serve
from curation.judge import latest_judgements
from curation.store import Store
from curation.store.model_tables import failure_models
from curation.store.tables import conversations

pytestmark = pytest.mark.slow

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def test_judge_path_through_the_cli(cli, home, oasst_file, argilla_env, tmp_path):
    import argilla as rg

    assert cli.json("ingest", oasst_file)["ingested"] > 1000
    cli.json("embed")
    cli.json("cluster")
    store = Store.open(home)
    judge = SimulatedJudge.for_store(store, noise=0.8, seed=0)

    with serve(judge) as url:
        first = cli.json("judge", "--all", "--url", url, "--model", "sim-judge")
        again = cli.json("judge", "--all", "--url", url, "--model", "sim-judge")
    with store.connect() as conn:
        replies = conn.execute(sa.select(sa.func.count()).select_from(conversations)
                               .where(conversations.c.messages.like('%"assistant"%'))).scalar()
        verdicts = latest_judgements(conn)
    assert first["judged"] == replies == len(verdicts) and first["failed"] == first["unparseable"] == 0
    assert again["requests"] == 0 and again["cached"] == replies  # the cache: a rerun asks nothing
    assert judge.unmatched <= 0.05 * replies  # the server recognised (almost) every conversation it was sent
    placed = [c for c in verdicts if c in judge.truth][:50]
    assert sum(verdicts[c]["helpfulness"] == judge.rate(c)["helpfulness"] for c in placed) >= 0.9 * len(placed)

    dataset = "judge-e2e"
    pushed = cli.json("annotate", "push", "--dataset", dataset, "--budget", "40", "--suggestions", "judge")
    assert pushed["pushed"] == 40
    with store.connect() as conn:
        record_of = dict(conn.execute(sa.select(annotation_records.c.record_id, annotation_records.c.conversation_id)
                                      .where(annotation_records.c.dataset == dataset)).all())
    client = rg.Argilla(api_url=argilla_env.url, api_key=argilla_env.api_key)
    records = list(client.datasets(name=dataset, workspace="argilla").records(with_suggestions=True))
    assert len(records) == 40
    for record in records:
        cid = record_of[record.id]
        suggested = {s.question_name: s for s in record.suggestions}
        assert set(suggested) == set(ATTRIBUTES)
        assert all(s.agent.startswith("judge:sim-judge:") for s in suggested.values())
        assert {a: suggested[a].value for a in ATTRIBUTES} == {a: verdicts[cid][a] for a in ATTRIBUTES}

    ratings = tmp_path / "people.jsonl"  # a third of the labelled conversations, none of those pushed above
    labelled = write_ratings(store, ratings)
    free = [c for c in sorted(verdicts) if c not in set(record_of.values())]
    third = write_ratings(store, ratings, ids=free, limit=labelled // 3, seed=0)
    assert cli.json("annotate", "import", ratings, "--dataset", "people")["imported"] == third

    refit = cli.json("cluster")["failure_model"]
    assert refit["refit"] and "judge helpfulness" in refit["features"]
    with store.connect() as conn:
        newest = conn.execute(sa.select(failure_models.c.n_ratings).order_by(failure_models.c.version.desc())).first()
    assert newest.n_ratings == third  # people's ratings are the labels; the judge's thousand-odd are not

    out = tmp_path / "report.html"
    cli.json("report", "--out", out)
    page = out.read_text(encoding="utf-8")
    assert 'id="judge-kappa"' in page and 'id="judge-confusion"' in page and "sim-judge@" in page
    assert "Which scorer ranked this list" in page
    store.dispose()
