"""Generation against a real OpenAI-compatible server: `transformers serve` (transformers[serving] 4.57) on loopback,
serving a tiny random Llama that the test builds (no download). Its text is gibberish; these tests check the
plumbing: its SSE answers (it streams even when `stream` is false), candidates stored, and `curate loop run` with
a `[generate]` entry pushing two-response records."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from annotations.tables import annotation_records
from curation.synthetic import write_jsonl
from curation.store import Store, loads
from curation.store.tables import conversations

pytestmark = pytest.mark.slow
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant: {% endif %}")


def tiny_chat_model(folder: Path) -> Path:
    """A random 2-layer Llama with a byte-level BPE tokenizer trained here. The tokenizer emits no token_type_ids
    (with them, `transformers serve` fails to generate)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["a small model that writes candidate answers for the tests"] * 4, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="</s>", model_input_names=["input_ids", "attention_mask"])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.min_new_tokens = 4  # a random model may end at once; an empty reply is no candidate
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory):
    """(base URL, model path) of a `transformers serve` process on a free loopback port."""
    model = tiny_chat_model(tmp_path_factory.mktemp("tiny-chat-model"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve = Path(sys.executable).parent / "transformers"
    log = open(tmp_path_factory.mktemp("serve-log") / "serve.log", "w+b")
    proc = subprocess.Popen([str(serve), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                             "--log_level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.seek(0)
            pytest.fail(f"transformers serve did not start: {log.read().decode()[-2000:]}")
        time.sleep(0.3)
    # serve loads a model on its first request and answers HTTP 500 to requests that arrive meanwhile: load it now,
    # so that each test sees a ready server whichever runs first (`make test` runs the loop test alone under -m embeds)
    while True:
        try:
            warm = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60,
                              json={"model": str(model), "max_tokens": 2,
                                    "messages": [{"role": "user", "content": "hello"}]})
            if warm.status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            log.seek(0)
            pytest.fail(f"transformers serve did not load the model: {log.read().decode()[-2000:]}")
        time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/v1", str(model)
    proc.terminate()
    proc.wait(30)
    log.close()


def test_generate_stores_candidates_from_transformers_serve(cli, store, tmp_path, transformers_serve):
    url, model = transformers_serve
    cli.json("ingest", write_jsonl(tmp_path / "traffic.jsonl", 20, seed=3))
    with store.connect() as conn:
        ids = conn.execute(sa.select(conversations.c.id).order_by(conversations.c.id).limit(4)).scalars().all()
    result = cli.json("generate", "--ids", ",".join(ids), "--url", url, "--model", model, "--concurrency", "2")
    assert result["generated"] == result["conversations"] >= 3 and result["failed"] == 0, result
    assert result["requests"] >= result["generated"] and result["tokens"] > 0  # estimated: serve reports no usage
    with store.connect() as conn:
        rows = conn.execute(sa.select(conversations).where(conversations.c.source == "generated")).all()
    for row in rows:
        reply = loads(row.messages)[-1]
        meta = loads(row.metadata)["generated"]
        assert reply["role"] == "assistant" and reply["content"].strip()
        assert meta["finish_reason"] == "stop" and meta["model"] == model and meta["usage"] is None


@pytest.mark.embeds
def test_loop_run_with_generate_pushes_two_response_records(cli, home, argilla_env, tmp_path, transformers_serve):
    url, model = transformers_serve
    write_jsonl(home / "incoming" / "day-1.jsonl", 60, seed=4)
    loop_file = tmp_path / "generate.toml"
    loop_file.write_text(f'''name = "with-generate"

[sources]
paths = ["{{home}}/incoming"]

[annotate]
dataset = "loop-generate-{os.getpid()}-{time.time_ns()}"
workspace = "argilla"
budget = 8
pairs = true

[train]
min_new_pairs = 100000

[[generate.endpoints]]
url = "{url}"
model = "{model}"
max_tokens = 12
''')
    summary = cli.json("loop", "run", "--config", loop_file)
    push = summary["steps"]["push"]
    assert summary["status"] == "done", summary["steps"]
    assert push["figures"]["pushed"] == 8 and push["figures"]["generated"] >= 4
    assert push["figures"]["generation_failed"] == 0
    with Store.open(home).connect() as conn:
        rows = conn.execute(sa.select(annotation_records.c.conversation_id_b, conversations.c.source)
                            .select_from(annotation_records.join(
                                conversations, conversations.c.id == annotation_records.c.conversation_id_b))).all()
    assert sum(source == "generated" for _, source in rows) == push["figures"]["generated"]
