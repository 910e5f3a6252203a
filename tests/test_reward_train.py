"""Training, evaluation, scoring and the promotion gate, with the real bundled MiniLM on real oasst1 pairs.

Training runs are tiny (2 steps, 64 tokens): these tests check the machinery; benchmarks/reward_train.py measures
accuracy."""
from __future__ import annotations

import json
import shutil

import numpy as np
import orjson
import pytest
import sqlalchemy as sa

from loops.reward import RewardModel, TrainConfig, evaluate, train
from loops.reward.devset import oasst_pairs, oasst_ratings, split_by_tree
from reward_support import TINY, tiny_decoder


def write(rows, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def dev(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("dev")
    pairs = oasst_pairs(shared_data / "oasst1-en-validation" / "oasst1-en-validation.jsonl")
    train_pairs, test_pairs = split_by_tree(pairs)
    for i, p in enumerate(test_pairs):
        p["cluster_id"] = i % 2
    write(train_pairs[:48], folder / "pairs" / "train.jsonl")
    write(test_pairs[:40], folder / "pairs" / "test.jsonl")
    return folder


@pytest.fixture(scope="module")
def bt_model(dev):
    result = train(dev / "pairs", dev / "bt", config=TrainConfig(**TINY), progress=False)
    return result


def test_oasst_dev_set_has_the_documented_pairs(shared_data):
    pairs = oasst_pairs(shared_data / "oasst1-en-validation" / "oasst1-en-validation.jsonl")
    assert len(pairs) == 1026
    train_pairs, test_pairs = split_by_tree(pairs)
    assert not {p["tree_id"] for p in train_pairs} & {p["tree_id"] for p in test_pairs}


def test_train_saves_a_standard_checkpoint(bt_model, dev):
    from transformers import AutoModelForSequenceClassification

    out = dev / "bt"
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1
    meta = json.loads((out / "curate_reward.json").read_text())
    assert meta["loss"] == "bt" and meta["rendering"] == "plain" and meta["data_version"]
    assert meta["history"]["pairwise"]["steps"] == 2 and meta["frozen_parameters"] > 0
    assert "Loss:** `bt`" in (out / "README.md").read_text()
    assert bt_model["train_pairs"] == 48 and bt_model["metrics"]["eval"]["n"] == 40
    assert 0.0 <= bt_model["eval_accuracy"] <= 1.0


@pytest.mark.slow
def test_training_is_seeded(bt_model, dev, tmp_path):
    train(dev / "pairs", tmp_path / "again", config=TrainConfig(**TINY), progress=False)
    pairs = [orjson.loads(line) for line in (dev / "pairs" / "test.jsonl").read_bytes().splitlines()[:6]]
    prompts, responses = [p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs]
    first, _ = RewardModel(dev / "bt").score(prompts, responses)
    second, _ = RewardModel(tmp_path / "again").score(prompts, responses)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def test_frozen_trunk_is_computed_once_and_gives_the_full_models_logits(bt_model, dev):
    import torch

    from loops.reward.padding import pad
    from loops.reward.trunk import FrozenTrunk, TopModel, pad_states

    rm = RewardModel(dev / "bt")
    n_frozen = rm.meta["frozen_layers"]
    assert n_frozen == rm.model.config.num_hidden_layers - 1  # the CPU default: only the top layer trains
    history = rm.meta["history"]["pairwise"]
    assert 0 < history["distinct_inputs"] < 2 * 48  # siblings share responses: each input ran through the trunk once
    pairs = [orjson.loads(line) for line in (dev / "pairs" / "test.jsonl").read_bytes().splitlines()[:6]]
    enc = [rm.renderer.encode(p["prompt"], p["chosen"][0]) for p in pairs]
    memo: dict = {}
    states = FrozenTrunk(rm.model, n_frozen, memo).features(enc + enc[:2], rm.tokenizer.pad_token_id)
    assert len(next(iter(memo.values()))) == len({tuple(e["input_ids"]) for e in enc})
    hidden, mask = pad_states(states[: len(enc)])
    with torch.inference_mode():
        top = TopModel(rm.model, n_frozen).eval()(hidden_states=hidden, attention_mask=mask).logits
        full = rm.model(**pad(enc, rm.tokenizer.pad_token_id)).logits
    torch.testing.assert_close(top, full, atol=1e-3, rtol=1e-3)  # states are stored in float16


def test_evaluate_reports_clusters_sources_and_length(bt_model, dev):
    result = evaluate(dev / "bt", dev / "pairs" / "test.jsonl")
    assert result["n"] == 40 and set(result["by_cluster"]) == {"0", "1"}
    assert sum(v["n"] for v in result["by_cluster"].values()) == 40
    assert list(result["by_source"]) == ["oasst1-en-validation"]
    assert result["ci_low"] <= result["accuracy"] <= result["ci_high"]
    assert -1 <= result["length_correlation"] <= 1 and 0 <= result["length_baseline"] <= 1
    split = result["by_length"]
    assert split["longer_chosen"]["n"] + split["shorter_chosen"]["n"] <= 40
    assert split["longer_chosen"]["n"] / 40 == pytest.approx(result["length_baseline"], abs=0.05)
    pairs = [orjson.loads(line) for line in (dev / "pairs" / "test.jsonl").read_bytes().splitlines()]
    rm = RewardModel(dev / "bt")
    rc, _ = rm.score([p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs])
    rr, _ = rm.score([p["prompt"] for p in pairs], [p["rejected"][0] for p in pairs])
    assert result["accuracy"] == pytest.approx(float(np.mean(np.where(rc > rr, 1, np.where(rc == rr, 0.5, 0)))), abs=1e-4)


@pytest.mark.slow
def test_regression_then_bt_reads_the_helpfulness_head(dev, shared_data, tmp_path):
    ratings = oasst_ratings(shared_data / "oasst1-en-validation" / "oasst1-en-validation.jsonl")[:24]
    write(ratings, tmp_path / "ratings" / "train.jsonl")
    result = train(dev / "pairs", tmp_path / "rtb", loss="regression-then-bt", ratings=tmp_path / "ratings",
                   config=TrainConfig(**TINY), progress=False)
    rm = RewardModel(tmp_path / "rtb")
    assert rm.model.config.num_labels == 5 and rm.model.config.id2label[0] == "helpfulness"
    rewards, attrs = rm.score([r["prompt"] for r in ratings[:3]], [r["response"][0] for r in ratings[:3]])
    assert attrs.shape == (3, 5) and np.allclose(rewards, attrs[:, 0])
    meta = json.loads((tmp_path / "rtb" / "curate_reward.json").read_text())
    assert set(meta["history"]) == {"regression", "pairwise"} and result["loss"] == "regression-then-bt"
    with pytest.raises(Exception, match="--ratings"):
        train(dev / "pairs", tmp_path / "x", loss="regression-then-bt", config=TrainConfig(**TINY))


@pytest.mark.slow
def test_decoder_base_uses_its_chat_template(dev, tmp_path):
    base = tiny_decoder(tmp_path / "decoder")
    train(dev / "pairs", tmp_path / "dec", base=str(base), config=TrainConfig(**TINY, freeze_layers=0), progress=False)
    meta = json.loads((tmp_path / "dec" / "curate_reward.json").read_text())
    assert meta["rendering"] == "chat_template" and meta["base"] == str(base)
    assert RewardModel(tmp_path / "dec").renderer.rendering == "chat_template"


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gpu_path_bf16_gradient_checkpointing(dev, tmp_path, lora):
    """A decoder base on the GPU: bf16 and gradient checkpointing by default and when asked for, with and without
    LoRA; the saved model scores on the GPU like the float32 CPU copy of the same weights."""
    import torch

    base = tiny_decoder(tmp_path / "decoder")
    cfg = TrainConfig(**TINY, lora=lora)
    train(dev / "pairs", tmp_path / "auto", base=str(base), config=cfg, progress=False)
    history = json.loads((tmp_path / "auto" / "curate_reward.json").read_text())["history"]["pairwise"]
    assert history["device"].startswith("cuda") and history["gradient_checkpointing"]
    assert history["bf16"] == torch.cuda.is_bf16_supported()
    if not torch.cuda.is_bf16_supported():
        return
    asked = TrainConfig(**{**vars(cfg), "bf16": True, "gradient_checkpointing": True})
    train(dev / "pairs", tmp_path / "asked", base=str(base), config=asked, progress=False)
    meta = json.loads((tmp_path / "asked" / "curate_reward.json").read_text())
    assert meta["history"]["pairwise"]["bf16"] and meta["history"]["pairwise"]["gradient_checkpointing"]
    assert (meta["adapter"] or {}).get("merged", True)  # LoRA merged at save time
    pairs = [orjson.loads(line) for line in (dev / "pairs" / "test.jsonl").read_bytes().splitlines()[:6]]
    rm = RewardModel(tmp_path / "asked")
    assert rm.device == "cuda" and rm.backend == "torch"
    on_gpu, _ = rm.score([p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs])
    rm.model.to("cpu")
    rm.device = "cpu"
    on_cpu, _ = rm.score([p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs])
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-3)


def _negated_copy(src, dst):
    """The same model with its reward negated: it ranks every pair the other way round."""
    from transformers import AutoModelForSequenceClassification

    shutil.copytree(src, dst)
    model = AutoModelForSequenceClassification.from_pretrained(dst)
    model.classifier.weight.data *= -1
    model.classifier.bias.data *= -1
    model.save_pretrained(dst)
    return dst


def test_registry_gate_and_scoring(store, bt_model, dev, tmp_path, oasst_file):
    from curation.store import dumps, insert_rows, utcnow
    from curation.store.failure_tables import rewards
    from curation.store.tables import conversations
    from loops.registry import RegistryError, champion, list_models, register
    from loops.reward.gate import promote
    from loops.reward.score import score
    from loops.tables import promotions

    with pytest.raises(RegistryError, match="promote"):
        score(store)
    # A gate on which the trained model is right on every pair (pairs it gets wrong are turned round).
    pairs = [orjson.loads(line) for line in (dev / "pairs" / "test.jsonl").read_bytes().splitlines()[:16]]
    rm = RewardModel(dev / "bt")
    rc, _ = rm.score([p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs])
    rr, _ = rm.score([p["prompt"] for p in pairs], [p["rejected"][0] for p in pairs])
    gate = [p if a > b else {**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p, a, b in zip(pairs, rc, rr) if a != b]
    gate_file = write(gate, tmp_path / "gate.jsonl")

    a = register(store, dev / "bt", base="minilm", loss="bt", data_version="v1", metrics={})
    b = register(store, _negated_copy(dev / "bt", tmp_path / "neg"), base="minilm", loss="bt", data_version="v1", metrics={})
    c = register(store, shutil.copytree(dev / "bt", tmp_path / "same"), base="minilm", loss="bt", data_version="v1", metrics={})
    first = promote(store, a, gate=gate_file)
    assert first["decision"] == "promoted" and first["champion"] is None
    worse = promote(store, b)  # the gate set stays fixed without --gate
    assert worse["decision"] == "rejected" and worse["figures"]["challenger_accuracy"] == 0.0
    assert "overall" in worse["figures"]["failed"] and champion(store)["version"] == a
    same = promote(store, c)
    assert same["decision"] == "promoted" and same["figures"]["checks"][0]["difference"] == 0.0
    statuses = {m["version"]: m["status"] for m in list_models(store)}
    assert statuses == {a: "retired", b: "candidate", c: "champion"}
    with store.connect() as conn:
        decisions = conn.execute(sa.select(promotions.c.decision).order_by(promotions.c.id)).scalars().all()
    assert decisions == ["promoted", "rejected", "promoted"]

    now = utcnow()
    rows = [{"id": f"c{i}", "messages": dumps(p["prompt"] + p["chosen"]), "n_messages": len(p["prompt"]) + 1,
             "ingested_at": now} for i, p in enumerate(pairs[:6])]
    rows.append({"id": "no-reply", "messages": dumps([{"role": "user", "content": "hi"}]), "n_messages": 1, "ingested_at": now})
    with store.begin() as conn:
        insert_rows(conn, conversations, rows)
    summary = score(store, backend="torch")
    assert summary["scored"] == 6 and summary["skipped"] == 1 and summary["model_version"] == c
    with store.connect() as conn:
        stored = dict(conn.execute(sa.select(rewards.c.conversation_id, rewards.c.reward)).all())
    np.testing.assert_allclose([stored[f"c{i}"] for i in range(6)], rc[:6], rtol=1e-4, atol=1e-5)
    assert score(store)["scored"] == 0  # incremental


@pytest.mark.slow
def test_cpu_backends_match_torch(bt_model, dev):
    pairs = [orjson.loads(line) for line in (dev / "pairs" / "test.jsonl").read_bytes().splitlines()[:8]]
    prompts, responses = [p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs]
    torch_rewards, _ = RewardModel(dev / "bt").score(prompts, responses)
    ov_rewards, _ = RewardModel(dev / "bt", backend="openvino").score(prompts, responses)
    assert (dev / "bt" / "openvino" / "openvino_model.xml").exists()
    np.testing.assert_allclose(ov_rewards, torch_rewards, atol=1e-3)
    auto = RewardModel(dev / "bt", backend="auto")  # on this CPU-only machine: ONNX Runtime int8, batch 16
    assert (auto.backend, auto.batch_size) == ("onnx", 16)
    int8_rewards, _ = auto.score(prompts, responses)
    exported = sorted(p.name for p in (dev / "bt" / "onnx-int8-fused").glob("*.onnx"))
    assert len(exported) == 1 and exported[0].startswith("model_fused_qint8_")
    np.testing.assert_allclose(int8_rewards, torch_rewards, atol=0.02)  # int8 weights: close, not equal
    # repeated inputs are scored once and get the same reward as when scored alone
    twice, _ = auto.score(prompts + prompts[:3], responses + responses[:3])
    np.testing.assert_array_equal(twice[:8], int8_rewards)
    np.testing.assert_array_equal(twice[8:], int8_rewards[:3])


def test_batched_rendering_equals_one_by_one(dev):
    from transformers import AutoTokenizer

    from loops.reward.render import Renderer

    pairs = [orjson.loads(line) for line in (dev / "pairs" / "test.jsonl").read_bytes().splitlines()[:40]]
    prompts = [p["prompt"] for p in pairs] + [[]]
    responses = [p["rejected"][0] for p in pairs] + [{"role": "assistant", "content": "no context at all"}]
    renderer = Renderer(AutoTokenizer.from_pretrained(dev / "bt"), max_length=128)
    assert renderer.encode_many(prompts, responses) == [renderer.encode(p, r) for p, r in zip(prompts, responses)]


def test_plain_rendering_is_the_tokenizers_own_sentence_pair_encoding():
    """On transformers 4 and 5 alike (5 dropped `build_inputs_with_special_tokens`): short enough not to be cut, a
    rendered pair is exactly what the tokenizer makes of (context, response) as a sentence pair."""
    from transformers import AutoTokenizer

    from loops.reward.render import Renderer, plain_context
    from loops.reward.trainer import default_base

    tokenizer = AutoTokenizer.from_pretrained(default_base())
    prompt = [{"role": "user", "content": "How do I boil an egg?"}]
    response = {"role": "assistant", "content": "Put it in boiling water for eight minutes."}
    for context in (prompt, []):
        expected = tokenizer(plain_context(context), response["content"])
        got = Renderer(tokenizer, max_length=128).encode(context, response)
        assert got == {"input_ids": expected["input_ids"], "token_type_ids": expected["token_type_ids"]}
