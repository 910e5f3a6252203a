"""`annotate push --pairs --generate` against the real embedded Argilla server and a local chat server: generated
candidates become response B, the A/B order is random per record, annotators rate what they see, and the export
undoes the order; TRL's RewardTrainer takes the pairs. The loop's push step generates, and a failing generator
leaves records single-response and the run partial."""
from __future__ import annotations

import uuid
from collections import Counter

import httpx
import orjson
import pytest
import sqlalchemy as sa

from annotations.generate import Endpoint, GenerateSettings
from annotations.order import swapped_records
from annotations.tables import annotation_records
from curation.ingest import ingest
from curation.synthetic import write_jsonl
from curation.store import loads
from curation.store.tables import conversations
from loops.loop import steps
from loops.loop.config import Annotate, LoopConfig
from loops.loop.runner import run_loop
from loops.simulate import _ensure_user
from tests.chat_fault_server import FaultServer
from tests.reward_support import tiny_decoder

RATER = "generate-rater"  # our own annotator name: the session server is shared with other areas' tests


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _records(server, dataset: str) -> list[dict]:
    owner = httpx.Client(base_url=server.url, headers={"X-Argilla-Api-Key": server.api_key}, timeout=60)
    found = next(d for d in owner.get("/api/v1/me/datasets").json()["items"] if d["name"] == dataset)
    return owner.get(f"/api/v1/datasets/{found['id']}/records", params={"limit": 1000}).json()["items"], owner, found


def _rate_what_is_shown(server, dataset: str) -> dict[str, str]:
    """A rater that reads the two shown texts and prefers the generated one ("candidate from …") strongly; every
    third record it also rewrites response A ("rewrite of <external id>"). Returns {external id: text shown as A}."""
    records, owner, found = _records(server, dataset)
    key = _ensure_user(owner, RATER, found["workspace_id"])
    rater = httpx.Client(base_url=server.url, headers={"X-Argilla-Api-Key": key}, timeout=60)
    shown_a, items = {}, []
    for i, record in enumerate(records):
        fields = record["fields"]
        values = {q: {"value": 2} for q in ("helpfulness", "correctness", "coherence", "complexity", "verbosity")}
        if fields.get("response_b"):
            a_is_generated = fields["response"].startswith("candidate from")
            values["preference"] = {"value": "-3" if a_is_generated else "3"}
        if i % 3 == 0:
            values["rewrite"] = {"value": f"rewrite of {record['external_id']}"}
        shown_a[record["external_id"]] = fields["response"]
        items.append({"record_id": record["id"], "values": values, "status": "submitted"})
    answer = rater.post("/api/v1/me/responses/bulk", json={"items": items})
    assert answer.status_code == 200 and not any(i.get("error") for i in answer.json()["items"]), answer.text[:500]
    return shown_a


def test_push_generate_randomises_a_b_and_the_export_undoes_it(cli, store, argilla_env, tmp_path):
    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 80, seed=7)], progress=False)
    dataset = _unique("gen-pairs")
    with FaultServer() as server:
        cli("annotate", "push", "--dataset", dataset, "--budget", "5", "--generate-url", server.url,
            "--generate-model", "gen-a", code=2)  # --generate needs --pairs
        pushed = cli.json("annotate", "push", "--dataset", dataset, "--budget", "30", "--pairs",
                          "--generate-url", server.url, "--generate-model", "gen-a")
    assert pushed["pushed"] == 30 and pushed["generation_failed"] == 0
    with store.connect() as conn:
        rows = conn.execute(sa.select(annotation_records.c.record_id, annotation_records.c.conversation_id,
                                      annotation_records.c.conversation_id_b, conversations.c.source)
                            .select_from(annotation_records.outerjoin(
                                conversations, conversations.c.id == annotation_records.c.conversation_id_b))
                            .where(annotation_records.c.dataset == dataset)).all()
        replies = {cid: loads(m)[-1]["content"] for cid, m in conn.execute(sa.select(conversations.c.id, conversations.c.messages))}
        swapped = swapped_records(conn, dataset)
    generated = [r for r in rows if r.source == "generated"]
    assert len(generated) == pushed["generated"] >= 20  # the rest had a production sibling
    records = {r["external_id"]: r for r in _records(argilla_env, dataset)[0]}
    for row in generated:
        fields, meta = records[row.record_id]["fields"], records[row.record_id]["metadata"]
        shown = (fields["response"], fields["response_b"])
        expected = (replies[row.conversation_id_b], replies[row.conversation_id])
        assert shown == (expected if row.record_id in swapped else expected[::-1])
        assert "model" not in meta and "signals" not in meta  # nothing says which reply is production's
    assert 0.25 < len(swapped) / len(generated) < 0.75  # both orders are shown

    shown_a = _rate_what_is_shown(argilla_env, dataset)
    cli.json("annotate", "pull", "--dataset", dataset)
    exported = cli.json("export", "preferences", "--out", tmp_path / "prefs", "--format", "jsonl", "--test-size", "0")
    pairs = [orjson.loads(line) for line in (tmp_path / "prefs" / "train.jsonl").read_bytes().splitlines()]
    assert exported["pairs"] == len(pairs)
    by_record = {r.record_id: r for r in generated}
    preference = [p for p in pairs if p["rule"] == "preference" and p["conversation_id_chosen"] in
                  {r.conversation_id_b for r in generated}]
    assert len(preference) == len(generated)
    for pair in preference:  # whichever order was shown, the generated reply won
        assert pair["chosen"][0]["content"].startswith("candidate from gen-a")
        assert pair["rejected"][0]["content"] == replies[pair["conversation_id_rejected"]]
    rewrites = [p for p in pairs if p["rule"] == "rewrite"]
    assert rewrites
    for pair in rewrites:  # the rewrite is of the response shown as A, generated or not
        record = pair["chosen"][0]["content"].removeprefix("rewrite of ")
        assert pair["rejected"][0]["content"] == shown_a[record]
    assert {p["conversation_id_rejected"] for p in rewrites} & {by_record[r].conversation_id_b for r in swapped}


@pytest.mark.slow
def test_trl_reward_trainer_takes_pairs_made_from_generated_candidates(cli, store, argilla_env, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 40, seed=8)], progress=False)
    dataset = _unique("gen-trl")
    with FaultServer() as server:
        cli.json("annotate", "push", "--dataset", dataset, "--budget", "12", "--pairs", "--generate-url", server.url,
                 "--generate-model", "gen-a")
    _rate_what_is_shown(argilla_env, dataset)
    cli.json("annotate", "pull", "--dataset", dataset)
    # jsonl: datasets 5.0 cannot load an hf export whose test split is empty (as --test-size 0 makes it)
    cli.json("export", "preferences", "--out", tmp_path / "pairs", "--format", "jsonl", "--test-size", "0")
    train = Dataset.from_json(str(tmp_path / "pairs" / "train.jsonl"))
    assert Counter(train["rule"])["preference"] >= 10
    base = tiny_decoder(tmp_path / "decoder")
    args = RewardConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2, max_length=512,
                        report_to="none", use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = RewardTrainer(model=AutoModelForSequenceClassification.from_pretrained(base, num_labels=1), args=args,
                            train_dataset=train, processing_class=AutoTokenizer.from_pretrained(base))
    assert trainer.train().global_step == 1


def test_loop_push_step_generates_and_a_failing_generator_ends_the_run_partial(store, argilla_env, tmp_path):
    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 60, seed=9)], progress=False)
    only_push = [("push", steps.push)]
    with FaultServer() as good:
        config = LoopConfig(name=_unique("gen-loop"), annotate=Annotate(dataset=_unique("gen-loop"), budget=10),
                            generate=GenerateSettings(endpoints=[Endpoint(url=good.url, model="gen-a")]))
        done = run_loop(store, config, steps=only_push)
    figures = done["steps"]["push"]["figures"]
    assert done["status"] == "done" and figures["pushed"] == 10 and figures["generated"] >= 5

    with FaultServer(default="500") as bad:
        config = LoopConfig(name=_unique("gen-loop"), annotate=Annotate(dataset=_unique("gen-loop"), budget=10),
                            generate=GenerateSettings(endpoints=[Endpoint(url=bad.url, model="broken")], retries=0,
                                                      stop_after=2))
        partial = run_loop(store, config, steps=only_push)
    figures = partial["steps"]["push"]["figures"]
    assert partial["status"] == "partial" and figures["pushed"] == 10 and figures["generated"] == 0
    assert figures["generation_failed"] >= 5 and "could not be generated" in figures["partial"]
    with store.connect() as conn:
        b_sides = conn.execute(sa.select(annotation_records.c.conversation_id_b)
                               .where(annotation_records.c.dataset == config.annotate.dataset)).scalars().all()
    assert sum(b is None for b in b_sides) == figures["generation_failed"]  # those stayed single-response
