"""Pre-filled Argilla: `annotate push --suggestions judge|reward|none`, checked through the Argilla SDK against the
real embedded server. The judge's values go where a conversation has a judgement (agent judge:MODEL:rubric-VERSION,
with a score), the reward model's elsewhere; `reward` and `none` do what they say."""
from __future__ import annotations

import random
import uuid

import pytest
import sqlalchemy as sa

from annotations.push import record_id
from curation.ingest import ingest
from curation.judge import ATTRIBUTES, latest_judgements
from curation.synthetic import write_jsonl
from curation.store import dumps, utcnow
from curation.store.failure_tables import rewards
from curation.store.tables import conversations
from tests.chat_fault_server import FaultServer

RM = "rm-judge-test"


@pytest.fixture
def judged(cli, store, tmp_path):
    """30 sample conversations, each with reward attributes; the first 10 judged through `curate judge`."""
    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 30, seed=12)], progress=False)
    with store.connect() as conn:
        ids = list(conn.execute(sa.select(conversations.c.id).order_by(conversations.c.id)).scalars())
    rng = random.Random(0)
    with store.begin() as conn:
        conn.execute(rewards.insert(), [
            {"conversation_id": cid, "model_version": RM, "reward": rng.random(), "scored_at": utcnow(),
             "attributes": dumps({a: rng.uniform(0, 4) for a in ATTRIBUTES}), "run_id": None} for cid in ids])
    with FaultServer(default="judge") as server:
        cli.json("judge", "--ids", ",".join(ids[:10]), "--url", server.url, "--model", "judge-m")
    return ids


def sdk_records(argilla_env, dataset: str) -> dict:
    import argilla as rg

    client = rg.Argilla(api_url=argilla_env.url, api_key=argilla_env.api_key)
    found = client.datasets(name=dataset, workspace="argilla")
    return {r.id: r for r in found.records(with_suggestions=True)}


def test_push_suggests_the_judges_values_else_the_reward_models(cli, store, judged, argilla_env):
    with store.connect() as conn:
        judgements = latest_judgements(conn)
    dataset = f"judge-sugg-{uuid.uuid4().hex[:8]}"
    pushed = cli.json("annotate", "push", "--dataset", dataset, "--ids", ",".join(judged))
    assert pushed["pushed"] == 30
    records = sdk_records(argilla_env, dataset)
    assert len(records) == 30
    version = next(iter(judgements.values()))["rubric_version"]
    for cid in judged:
        record = records[record_id(cid)]  # the SDK's record id is push's external id
        by_question = {name: record.suggestions[name] for name in ATTRIBUTES}
        if cid in judgements:
            for name, suggestion in by_question.items():
                assert suggestion.value == judgements[cid][name]
                assert suggestion.agent == f"judge:judge-m:rubric-{version}"
                assert suggestion.score == pytest.approx(judgements[cid][name] / 4)
        else:
            assert {s.agent for s in by_question.values()} == {RM}
            assert all(0 <= s.value <= 4 for s in by_question.values())


def test_push_suggestions_reward_and_none(cli, store, judged, argilla_env):
    reward_only = f"judge-rm-{uuid.uuid4().hex[:8]}"
    cli.json("annotate", "push", "--dataset", reward_only, "--ids", ",".join(judged[:5]), "--suggestions", "reward")
    assert {r.suggestions["helpfulness"].agent for r in sdk_records(argilla_env, reward_only).values()} == {RM}
    plain = f"judge-none-{uuid.uuid4().hex[:8]}"
    cli.json("annotate", "push", "--dataset", plain, "--ids", ",".join(judged[5:10]), "--suggestions", "none")
    assert all(not list(r.suggestions) for r in sdk_records(argilla_env, plain).values())
    cli("annotate", "push", "--dataset", plain, "--ids", judged[11], "--suggestions", "gpt", code=2)
