"""Reward models on a decoder base, trained on 2 CPU processes (DDP over gloo), with and without LoRA.

The base is a tiny random Llama built here from a config, with a byte-level BPE tokenizer trained on generated text
and a chat template: no download. Training runs are a few steps; these tests check the machinery (rendering,
launching, saving, loading, scoring, the gate), not accuracy (benchmarks/reward_ddp.py measures that).
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from loops.reward import RewardModel, TrainConfig, train
from loops.reward.devset import oasst_pairs, split_by_tree

EOS = "<|endoftext|>"
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}" + EOS + "\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
TINY = {"max_steps": 2, "max_length": 64, "batch_size": 4}


def generated_text(n_lines: int, seed: int = 0) -> list[str]:
    """Sentences of made-up words (syllables drawn at random) with punctuation and digits: BPE training text."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "qu", "ix", "na", "dor", "el", "th", "an", "is", "or"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(300)]
    return [" ".join(rng.choices(words, k=rng.randint(4, 16))).capitalize() + rng.choice([".", "?", "!", f" {n}."])
            for n in range(n_lines)]


def build_decoder_base(folder):
    """A 2-layer Llama (hidden 48, 4 heads, random weights) saved as a causal-LM checkpoint, like a hub base, with a
    ~500-token byte-level BPE tokenizer that has a chat template and an EOS token but no pad token."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = [EOS, "<|system|>", "<|user|>", "<|assistant|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(generated_text(400), trainers.BpeTrainer(
        vocab_size=500, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, model_input_names=["input_ids", "attention_mask"],
                                        eos_token=EOS, additional_special_tokens=specials[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write(rows, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("decoder")
    build_decoder_base(folder / "base")
    train_pairs, test_pairs = split_by_tree(oasst_pairs(shared_data / "oasst1-en-validation" / "oasst1-en-validation.jsonl"))
    write(train_pairs[:32], folder / "pairs" / "train.jsonl")
    write(test_pairs[:24], folder / "pairs" / "test.jsonl")
    return folder


@pytest.fixture(scope="module")
def lora_runs(work):
    """The same LoRA training on 2 processes twice: adapter kept, and merged into the base."""
    cfg = TrainConfig(**TINY, lora=True, lora_r=4, lora_alpha=8, num_processes=2)
    kept = train(work / "pairs", work / "lora-kept", base=str(work / "base"), config=TrainConfig(**{**vars(cfg), "lora_keep": True}))
    merged = train(work / "pairs", work / "lora-merged", base=str(work / "base"), config=cfg)
    return kept, merged


def test_chat_template_renders_context_and_reply(work):
    from transformers import AutoTokenizer

    from loops.reward.render import Renderer

    tok = AutoTokenizer.from_pretrained(work / "base")
    renderer = Renderer(tok, max_length=512)
    assert renderer.rendering == "chat_template"
    prompt = [{"role": "user", "content": "Kalo mi ren?"}]
    ids = renderer.encode(prompt, {"role": "assistant", "content": "Sa vel to."})["input_ids"]
    assert tok.decode(ids) == f"<|user|>\nKalo mi ren?{EOS}\n<|assistant|>\nSa vel to.{EOS}\n"
    ctx, reply = renderer.pieces(prompt, {"role": "assistant", "content": "Sa vel to."})
    assert tok.decode(reply) == f"Sa vel to.{EOS}\n" and ids == ctx + reply


def test_two_processes_lora_kept_and_merged_give_the_same_rewards(lora_runs, work):
    kept, merged = lora_runs
    meta = json.loads((work / "lora-kept" / "curate_reward.json").read_text())
    assert meta["processes"] == 2 and meta["history"]["pairwise"]["processes"] == 2
    assert meta["adapter"] == {"r": 4, "alpha": 8, "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"],
                               "merged": False}
    assert (work / "lora-kept" / "adapter_model.safetensors").exists()
    assert not (work / "lora-kept" / "model.safetensors").exists()
    assert json.loads((work / "lora-merged" / "curate_reward.json").read_text())["adapter"]["merged"] is True
    assert not (work / "lora-merged" / "adapter_config.json").exists()
    assert kept["metrics"]["eval"]["n"] == merged["metrics"]["eval"]["n"] == 24
    pairs = [orjson.loads(line) for line in (work / "pairs" / "test.jsonl").read_bytes().splitlines()[:8]]
    prompts, replies = [p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs]
    from_adapter, _ = RewardModel(work / "lora-kept", backend="auto").score(prompts, replies)
    from_merged, _ = RewardModel(work / "lora-merged", backend="auto").score(prompts, replies)
    base_model = RewardModel(work / "lora-kept").model
    assert base_model.config.pad_token_id == base_model.config.eos_token_id  # pad = EOS on a base without one
    # Seeded DDP on gloo is deterministic, so the two runs trained the same adapter; merging keeps its rewards
    np.testing.assert_allclose(from_adapter, from_merged, rtol=1e-4, atol=1e-5)
    assert np.ptp(from_adapter) > 0  # a reward that depends on the reply, not a constant


def test_one_and_two_processes_train_the_same_decoder(work):
    """Under 50 batches the length-grouped order is one sorted block, so the 2 processes' halves of each step are
    the 1-process step's 4 pairs; Llama has no dropout, and the per-batch length penalty is off: DDP must then
    give the same model (gradients averaged over the ranks, the length coefficient's included)."""
    cfg = TrainConfig(**TINY, length_penalty=0.0)
    one = train(work / "pairs", work / "p1", base=str(work / "base"), config=cfg)
    two = train(work / "pairs", work / "p2", base=str(work / "base"), config=TrainConfig(**{**vars(cfg), "num_processes": 2}))
    h1 = json.loads((work / "p1" / "curate_reward.json").read_text())["history"]["pairwise"]
    h2 = json.loads((work / "p2" / "curate_reward.json").read_text())["history"]["pairwise"]
    assert (h1["processes"], h2["processes"]) == (1, 2)
    assert h1["steps"] == h2["steps"] == 2 and h1["pairs_seen"] == h2["pairs_seen"] == 8  # 4 pairs a step either way
    for result in (one, two):
        meta = json.loads((work / result["model"] / "curate_reward.json").read_text())
        assert meta["rendering"] == "chat_template" and meta["adapter"] is None and meta["frozen_layers"] == 1
        assert result["metrics"]["eval"]["n"] == 24 and 0 <= result["eval_accuracy"] <= 1
    pairs = [orjson.loads(line) for line in (work / "pairs" / "test.jsonl").read_bytes().splitlines()]
    prompts, replies = [p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs]
    r1, _ = RewardModel(work / "p1").score(prompts, replies)
    r2, _ = RewardModel(work / "p2").score(prompts, replies)
    train(work / "pairs", work / "p0", base=str(work / "base"), config=TrainConfig(**{**vars(cfg), "learning_rate": 1e-12}))
    r0, _ = RewardModel(work / "p0").score(prompts, replies)  # the same start, (almost) no update
    assert np.abs(r2 - r1).max() < np.abs(r1 - r0).max() / 100  # what training changed, DDP reproduced


def test_cli_trains_on_two_processes_scores_and_promotes(cli, work, tmp_path):
    """`reward train --num-processes 2 --lora --lora-keep` registers one candidate; the gate promotes it; `reward
    score` (backend auto: torch for a decoder) scores the store's conversations with it, JSON alone on stdout."""
    out = tmp_path / "rm"
    trained = cli.json("reward", "train", "--data", work / "pairs", "--out", out, "--base", work / "base",
                       "--num-processes", 2, "--lora", "--lora-keep", "--lora-r", 4, "--max-steps", 2,
                       "--batch-size", 4, "--max-length", 64)
    assert trained["model"] == str(out) and trained["train_pairs"] == 32
    assert [m["version"] for m in cli.json("reward", "list")["models"]] == [trained["version"]]
    # A gate on which this model is right on every pair: it must then beat the length baseline and get promoted
    pairs = [orjson.loads(line) for line in (work / "pairs" / "test.jsonl").read_bytes().splitlines()]
    rm = RewardModel(out)
    rc, _ = rm.score([p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs])
    rr, _ = rm.score([p["prompt"] for p in pairs], [p["rejected"][0] for p in pairs])
    gate = [p if a > b else {**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p, a, b in zip(pairs, rc, rr) if a != b]
    promoted = cli.json("reward", "promote", trained["version"], "--gate", write(gate, tmp_path / "gate.jsonl"))
    assert promoted["decision"] == "promoted" and promoted["figures"]["challenger_accuracy"] == 1.0

    conversations = [{"id": f"c{i}", "messages": p["prompt"] + p["chosen"]} for i, p in enumerate(pairs[:5])]
    cli.json("ingest", write(conversations, tmp_path / "traffic.jsonl"))
    result = cli("reward", "score", "--json")  # the champion, backend auto
    summary = orjson.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert summary["scored"] == 5 and summary["model_version"] == trained["version"]
    from curation.store import Store
    from loops.reward.score import score

    assert score(Store.open(cli.home))["scored"] == 0  # incremental
    import sqlalchemy as sa

    from curation.store.failure_tables import rewards

    with Store.open(cli.home).connect() as conn:
        stored = dict(conn.execute(sa.select(rewards.c.conversation_id, rewards.c.reward)).all())
    np.testing.assert_allclose([stored[f"c{i}"] for i in range(5)], rc[:5], rtol=1e-4, atol=1e-5)


def test_cli_usage_errors(cli, work, tmp_path):
    args = ("reward", "train", "--data", work / "pairs", "--out", tmp_path / "x", "--base", work / "base")
    assert "need --lora" in cli(*args, "--lora-keep", code=2).stderr
    assert "--num-processes" in cli(*args, "--num-processes", 0, code=2).stderr
    assert "--lora-r" in cli(*args, "--lora", "--lora-r", 0, code=2).stderr
    bf16 = cli(*args, "--bf16", code=1).stderr  # this machine has no CUDA GPU
    assert "--bf16 needs a CUDA GPU" in bf16 and len(bf16.strip().splitlines()) == 1
    odd = cli(*args, "--num-processes", 2, "--batch-size", 3, "--max-steps", 1, code=1).stderr
    assert "use a multiple of 2" in odd and len(odd.strip().splitlines()) == 1


def test_exported_backends_refuse_a_decoder(lora_runs, work):
    from curation.errors import InputError

    with pytest.raises(InputError, match="--backend torch"):
        RewardModel(work / "lora-merged", backend="onnx")
    with pytest.raises(InputError, match="--backend torch"):
        RewardModel(work / "lora-kept", backend="openvino")


@pytest.fixture
def ray_on_postgres(tmp_path, monkeypatch, ray_home):
    """A `cli` whose home is on a fresh schema of the test PostgreSQL, and a Ray cluster of 2 one-CPU nodes (the one
    tests/test_engine_ray.py started when it ran first in this session). Like that file, it does not use the
    `database_url` fixture, so the PostgreSQL pass of `make test` does not run it again."""
    from conftest import Cli

    import subprocess
    import uuid

    import sqlalchemy as sa

    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'curate[ray]'")
    url = os.environ.get("CURATE_TEST_DATABASE_URL") or subprocess.run(
        [str(Path(__file__).resolve().parent.parent / "scripts" / "test-postgres.sh")], capture_output=True,
        text=True, check=False).stdout.strip()
    if not url:
        pytest.skip("no PostgreSQL for the Ray test (CURATE_TEST_DATABASE_URL or scripts/test-postgres.sh)")
    schema, admin = "dec_" + uuid.uuid4().hex[:12], sa.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    monkeypatch.setenv("CURATE_DATABASE_URL", f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}")
    monkeypatch.setenv("CURATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(ray_home))  # Ray's auth token: the session's one file, never the user's home
    cluster = None
    if not ray.is_initialized():
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 << 20})
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=80 << 20)
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        cluster.wait_for_nodes()
    yield Cli(tmp_path / "home")
    if cluster is not None:
        ray.shutdown()
        cluster.shutdown()
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.mark.ray
def test_ray_engine_scores_with_a_kept_adapter_as_the_local_path_does(lora_runs, work, ray_on_postgres, tmp_path):
    cli = ray_on_postgres
    pairs = [orjson.loads(line) for line in (work / "pairs" / "test.jsonl").read_bytes().splitlines()]
    cli.json("ingest", write([{"id": f"c{i}", "messages": p["prompt"] + p["chosen"]} for i, p in enumerate(pairs)],
                             tmp_path / "traffic.jsonl"))
    on_ray = cli.json("reward", "score", "--model", work / "lora-kept", "--engine", "ray")
    assert on_ray["scored"] == len(pairs) and on_ray["engine"] == "ray"
    import sqlalchemy as sa

    from curation.store import Store
    from curation.store.failure_tables import rewards

    with Store.open(cli.home).connect() as conn:
        stored = dict(conn.execute(sa.select(rewards.c.conversation_id, rewards.c.reward)).all())
    local, _ = RewardModel(work / "lora-kept").score([p["prompt"] for p in pairs], [p["chosen"][0] for p in pairs])
    np.testing.assert_allclose([stored[f"c{i}"] for i in range(len(pairs))], local, rtol=1e-5, atol=1e-5)
