"""Part 3 of embed_throughput.py (`--tune`): each setting tried to bring the int8 backends closer to the CPU's peak,
against the default in the same run, on the first `--tune-texts` texts of part 1, `--tune-runs` runs each.

- streams: N copies of the model with one thread each, texts spread over them (ONNX's default), against one copy
  whose session uses every core;
- batching: ONNX on batches of 16 (length-sorted: little padding, but the per-batch scales of issue 21) against one
  text at a time (no padding at all); OpenVINO the same; the padding share that sorted batches of 16 leave;
- OpenVINO's performance hints: LATENCY (the default) against THROUGHPUT;
- tokenisation: its share of the per-text time, which is all that moving it off the critical path could save;
- the compiled-model cache: OpenVINO's `CACHE_DIR`, load time without and with it.
"""
from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def streams(make, n: int):
    """An encode that spreads texts over `n` models (`make()` each), one thread each, in parallel."""
    models = [make() for _ in range(n)]
    pool = ThreadPoolExecutor(n)

    def encode(texts):
        parts = [texts[i::n] for i in range(n)]
        results = list(pool.map(lambda pair: pair[0].encode(pair[1]), zip(models, parts)))
        out = np.empty((len(texts), results[0].shape[1]), dtype=np.float32)
        for i, result in enumerate(results):
            out[i::n] = result
        return out

    return encode


def openvino_model(folder: Path, batch_size: int, **config):
    """An OpenVINO model of the export in `folder` with these properties (`ov_config`), and its encode."""
    from curation.console import quiet
    from curation.embed.int8 import OPENVINO_FILE, sentence_transformer

    with quiet():  # optimum guesses aloud whether the folder was already converted
        model = sentence_transformer(str(folder), "openvino", {"file_name": OPENVINO_FILE, "ov_config": config})
    return model, lambda texts: model.encode(texts, batch_size=batch_size, normalize_embeddings=True)


def onnx_model(folder: Path, threads: int):
    """The ONNX export in `folder` as one model whose session runs `threads` threads."""
    import onnxruntime

    from curation.console import quiet
    from curation.embed.int8 import onnx_file, sentence_transformer

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    with quiet():
        return sentence_transformer(str(folder), "onnx", {"file_name": onnx_file(folder), "session_options": options,
                                                          "provider": "CPUExecutionProvider"})


def padding_share(counts: list[int], batch_size: int) -> float:
    """Padded tokens over real ones when texts are sorted by length and cut into batches (sentence-transformers)."""
    ordered = sorted(counts, reverse=True)
    padded = sum(max(b) * len(b) for b in (ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)))
    return padded / sum(counts) - 1


def tune(args, texts: list[str], cpu: dict, cache: Path) -> None:
    import time

    from embed_throughput import compare, load, macs, timed
    from transformers import AutoConfig, AutoTokenizer

    from curation.embed import Embedder
    from curation.embed.embedder import resolve_model

    texts = texts[: args.tune_texts]
    source = resolve_model(None)[1]
    tokenizer = AutoTokenizer.from_pretrained(source)
    counts = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    flops = 2 * macs(counts, AutoConfig.from_pretrained(source))
    cores = cpu["cores"]
    print(f"part 3: settings on {len(texts)} texts, load {load()}; sorted batches of 16 pad "
          f"{padding_share(counts, 16):.1%} of the real tokens, unsorted {_unsorted(counts, 16):.1%}")

    onnx = Embedder(backend="onnx", cache_dir=cache)  # the default: one text per run, one-thread copies
    onnx.load(texts)
    pooled = onnx_model(onnx.export("onnx", texts), cores)
    runners = {"torch fp32": Embedder(backend="torch").encode,
               f"onnx, one text at a time, {cores} one-thread copies (default)": onnx.encode,
               f"onnx, one text at a time, one copy with {cores} threads":
                   lambda t: pooled.encode(t, batch_size=1, normalize_embeddings=True),
               f"onnx, batches of 16, one copy with {cores} threads (per-batch scales)":
                   lambda t: pooled.encode(t, batch_size=16, normalize_embeddings=True)}
    folder = Embedder(backend="openvino", cache_dir=cache).export("openvino", texts)
    for hint in ("LATENCY", "THROUGHPUT"):
        for size in (16, 1):
            runners[f"openvino {hint}, batches of {size}"] = openvino_model(folder, size, PERFORMANCE_HINT=hint)[1]
    runners[f"openvino LATENCY, {cores} streams of 1 thread, batches of 16"] = streams(
        lambda: _Wrapped(openvino_model(folder, 16, PERFORMANCE_HINT="LATENCY", INFERENCE_NUM_THREADS=1,
                                        ENABLE_CPU_PINNING="NO")[1]), cores)
    for runner in runners.values():
        runner(texts[:4])
    compare(runners, texts, args.tune_runs, "torch fp32", flops, cpu)

    # tokenisation: what a pipeline that tokenises ahead, on another core, could take off the critical path
    _, token_s, _ = timed(lambda: [tokenizer(t, truncation=True, max_length=256) for t in texts])
    _, encode_s, _ = timed(onnx.encode, texts)
    print(f"  tokenising one text at a time takes {token_s / encode_s:.1%} of ONNX's per-text encode "
          f"({1000 * token_s / len(texts):.2f} ms per text)")

    with tempfile.TemporaryDirectory(prefix="ov-cache-") as ov_cache:
        loads = []
        for _ in range(2):
            start = time.perf_counter()
            model, encode = openvino_model(folder, 16, PERFORMANCE_HINT="LATENCY", CACHE_DIR=ov_cache)
            encode(texts[:1])
            loads.append(time.perf_counter() - start)
        start = time.perf_counter()
        openvino_model(folder, 16, PERFORMANCE_HINT="LATENCY")[1](texts[:1])
        plain = time.perf_counter() - start
    print(f"  OpenVINO load + first text: {plain:.2f}s without CACHE_DIR, {loads[0]:.2f}s filling it, "
          f"{loads[1]:.2f}s from it (load {load()})")


class _Wrapped:
    def __init__(self, encode):
        self.encode = encode


def _unsorted(counts: list[int], batch_size: int) -> float:
    padded = sum(max(b) * len(b) for b in (counts[i : i + batch_size] for i in range(0, len(counts), batch_size)))
    return padded / sum(counts) - 1
