"""`curate judge` against a real OpenAI-compatible server: `transformers serve` with a tiny random Llama (see
tests/test_generate_serve.py). Its answers are gibberish, so every one is unparseable: this checks that they are
asked once more, counted and reported, never a crash. It checks mechanics only, not the value of a judge."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from curation.synthetic import write_jsonl
from curation.store.judge_tables import judgements
from curation.store.tables import conversations
from tests.test_generate_serve import transformers_serve  # noqa: F401 -- the module-scoped server fixture

pytestmark = pytest.mark.slow


def test_judge_counts_the_unparseable_answers_of_a_random_model(cli, store, tmp_path, transformers_serve):  # noqa: F811
    url, model = transformers_serve
    cli.json("ingest", write_jsonl(tmp_path / "traffic.jsonl", 20, seed=3))
    with store.connect() as conn:
        ids = conn.execute(sa.select(conversations.c.id).order_by(conversations.c.id).limit(3)).scalars().all()
    (cli.home / "curate.toml").write_text(f'[judge]\nconcurrency = 2\n\n[[judge.endpoints]]\nurl = "{url}"\n'
                                          f'model = "{model}"\nmax_tokens = 16\n')
    result = cli.json("judge", "--ids", ",".join(ids), code=1)  # nothing could be judged: exit 1, with the figures
    assert result["judged"] == 0 and result["failed"] == 3 and result["status"] == "failed"
    assert result["unparseable"] == 6 and result["requests"] >= 6  # each answer asked once more
    assert "unparseable answer, twice" in next(iter(result["errors"].values()))
    assert store.count(judgements) == 0  # no judgement is stored from an answer that held none
