"""Embedding throughput per backend, against torch fp32 in the same run, with the distance to the CPU's peak.

Part 1, same texts (oasst1 messages, then arena-hard answers): each backend (torch fp32; torch bf16 where the CPU has
AMX or AVX512-BF16; ONNX int8; OpenVINO int8) embeds them `--runs` times, the backends taking turns so that other
processes' load falls on all alike. Prints the median texts/s and CPU-ms per text, the ratios to torch fp32, cosine to
fp32 (mean, p1, min), and the achieved operations per second: 2 × the model's multiply-accumulates for the measured
token counts (linear layers per token, attention per pair of tokens), over the CPU's peak for its instruction set
(`PEAK`, per core and cycle, times the clock and the cores). The CPU flags and the load average go with every figure.
Part 2, `curate embed` end to end on a fresh store (oasst1 threads, arena-hard conversations): first run, rerun on
unchanged data, and the stored vectors against plain torch fp32 encodes of the same view's texts.
Part 3 (`--tune`): the settings tried to close the distance (streams, OpenVINO hints, batching, tokenisation, the
compiled-model cache), each against the default in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/embed_throughput.py [--limit 400] [--runs 3] [--tune] [--skip-e2e]
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# peak operations per core per cycle (a multiply-accumulate is 2), from the vendors' instruction tables, not measured:
# AVX2: 2 FMA pipes × 8 fp32 lanes; int8 needs vpmaddubsw + vpmaddwd (2 multiply-pipe µops per 32 MACs, 2 pipes).
# AVX-512: 2 × 16 fp32 lanes; VNNI's vpdpbusd does 64 int8 MACs in one µop, 2 pipes. AMX: 1,024 int8 / 512 bf16
# MACs per cycle per core (Intel's figures for Sapphire Rapids).
PEAK = {"avx2": {"fp32": 32, "int8": 64}, "avx512": {"fp32": 64, "int8": 128},
        "avx512_vnni": {"fp32": 64, "int8": 256}, "amx": {"fp32": 64, "int8": 2048, "bf16": 1024}}


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.open("rb")]


def message_texts() -> list[str]:
    texts = [m["text"] for m in read_jsonl(DATA / "oasst1-en-validation" / "oasst1-en-validation.jsonl")]
    for name in ("gpt-4-0314.jsonl", "gpt-3.5-turbo-0125.jsonl"):
        texts += [row["messages"][1]["content"]["answer"] for row in read_jsonl(DATA / "arena-hard-v0.1" / name)]
    return texts


def conversations() -> list[tuple[str, list[dict]]]:
    """oasst1 root → assistant-message threads, and arena-hard prompt + gpt-4 answer."""
    by_id = {m["message_id"]: m for m in read_jsonl(DATA / "oasst1-en-validation" / "oasst1-en-validation.jsonl")}
    out = []
    for mid, msg in by_id.items():
        if msg["role"] != "assistant":
            continue
        path, node = [], msg
        while node is not None:
            path.append({"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]})
            node = by_id.get(node["parent_id"]) if node["parent_id"] else None
        out.append((mid, path[::-1]))
    for row in read_jsonl(DATA / "arena-hard-v0.1" / "gpt-4-0314.jsonl"):
        out.append((row["uid"], [{"role": "user", "content": row["messages"][0]["content"]},
                                 {"role": "assistant", "content": row["messages"][1]["content"]["answer"]}]))
    return out


def cpu_facts() -> dict:
    """Class, int8/bf16 flags, clock (GHz, as /proc/cpuinfo reports it now) and cores."""
    from curation.embed.int8 import cpu_class, cpu_flags

    flags = cpu_flags()
    try:
        mhz = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text()).group(1))
    except (OSError, AttributeError):
        mhz = float("nan")
    shown = sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16")
                   or f.startswith("amx"))
    return {"class": cpu_class(flags), "flags": shown, "ghz": mhz / 1000, "cores": os.cpu_count() or 1,
            "bf16": bool({"amx_bf16", "avx512_bf16"} & flags)}


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def macs(token_counts: list[int], config) -> float:
    """Multiply-accumulates of a BERT encoder over texts of these lengths: per token, Q/K/V/output projections and
    the feed-forward; per pair of tokens, the attention scores and the weighted sum."""
    h, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = np.asarray(token_counts, dtype=np.float64)
    return float(layers * ((4 * h * h + 2 * h * ff) * n.sum() + 2 * h * (n ** 2).sum()))


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process: less sensitive to other processes' load)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start, time.process_time() - cpu


class Bf16:
    """torch in bfloat16: the fair baseline on CPUs with AMX or AVX512-BF16."""

    def __init__(self, batch_size: int):
        import torch

        from curation.embed.embedder import resolve_model
        from curation.embed.int8 import sentence_transformer

        self.model = sentence_transformer(resolve_model(None)[1]).to(torch.bfloat16)
        self.batch_size = batch_size

    def encode(self, texts):
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True).astype(np.float32)


def compare(label_runners: dict, texts: list[str], runs: int, ref_label: str, flops: float, cpu: dict) -> dict:
    """Each runner `runs` times, in turns; prints one row per runner with the medians; returns the rows."""
    times: dict[str, list[tuple[float, float, str]]] = {label: [] for label in label_runners}
    vectors = {}
    for _ in range(runs):
        for label, runner in label_runners.items():
            vectors[label], wall, cpu_s = timed(runner, texts)
            times[label].append((wall, cpu_s, load()))
    rows = {}
    ref_wall = ref_cpu = None
    for label, seen in times.items():
        wall, cpu_s = float(np.median([t[0] for t in seen])), float(np.median([t[1] for t in seen]))
        if label == ref_label:
            ref_wall, ref_cpu = wall, cpu_s
        cos = (vectors[label] * vectors[ref_label]).sum(axis=1)
        kind = "bf16" if "bf16" in label else "fp32" if label.startswith("torch") else "int8"
        peak = PEAK.get(cpu["class"], {}).get(kind, float("nan")) * cpu["ghz"] * 1e9
        rows[label] = dict(rate=len(texts) / wall, cpu_ms=1000 * cpu_s / len(texts), wall=wall, cpu=cpu_s,
                           ratio=ref_wall / wall, cpu_ratio=ref_cpu / cpu_s, mean=float(cos.mean()),
                           p1=float(np.percentile(cos, 1)), min=float(cos.min()), worst=int(cos.argmin()),
                           gops=flops / wall / 1e9, frac=flops / wall / (peak * cpu["cores"]),
                           frac_cpu=flops / cpu_s / peak, kind=kind, loads=[t[2] for t in seen])
        r = rows[label]
        print(f"  {label:<34} {r['rate']:6.1f} texts/s {r['cpu_ms']:6.1f} CPU-ms/text  {r['ratio']:5.2f}x wall "
              f"{r['cpu_ratio']:5.2f}x CPU  cosine mean {r['mean']:.4f} p1 {r['p1']:.4f} min {r['min']:.4f}  "
              f"{r['gops']:6.1f} G{kind}-ops/s = {r['frac']:.1%} of {cpu['cores']} cores' peak "
              f"({r['frac_cpu']:.1%} per CPU-second)  load {' '.join(r['loads'])}", flush=True)
    return rows


def part1(args, texts: list[str], cpu: dict, cache: Path) -> dict:
    from curation.embed import Embedder
    from curation.embed.embedder import resolve_model
    from curation.embed.int8 import installed
    from transformers import AutoConfig, AutoTokenizer

    source = resolve_model(None)[1]
    tokenizer = AutoTokenizer.from_pretrained(source)
    counts = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    flops = 2 * macs(counts, AutoConfig.from_pretrained(source))
    print(f"part 1 (load {load()}): {len(texts)} texts, {sum(counts)} tokens (mean {np.mean(counts):.0f}, max {max(counts)}), "
          f"{flops / len(texts) / 1e9:.2f} GOP per text; peak per core and cycle for {cpu['class']}: "
          f"{PEAK.get(cpu['class'])} at {cpu['ghz']:.2f} GHz × {cpu['cores']} cores")
    runners = {"torch fp32": Embedder(backend="torch", batch_size=args.batch_size, threads=args.threads)}
    if cpu["bf16"]:
        runners["torch bf16"] = Bf16(args.batch_size)
    else:
        print("  torch bf16: not measured (no AMX or AVX512-BF16 on this CPU)")
    for backend in ("onnx", "openvino"):
        if backend == "onnx" and not installed("onnxruntime") or backend == "openvino" and not installed("openvino"):
            continue
        embedder = Embedder(backend=backend, batch_size=args.batch_size, threads=args.threads, cache_dir=cache,
                            calibration_texts=texts)
        _, load_s, _ = timed(embedder.load, texts)
        print(f"  {embedder.backend_label}: export + load once {load_s:.1f}s (cached per machine afterwards)")
        runners[f"{backend} int8 ({embedder.backend_label})"] = embedder
    for runner in runners.values():
        runner.encode(texts[:4])  # warm: first-call allocations are not throughput
    rows = compare({label: r.encode for label, r in runners.items()}, texts, args.runs, "torch fp32", flops, cpu)
    for label, row in rows.items():
        if row["min"] < 0.97:
            print(f"  {label}: lowest cosine on text {row['worst']} ({counts[row['worst']]} tokens): "
                  f"{texts[row['worst']][:100]!r}…")
    return dict(rows=rows, flops=flops, counts=counts)


def part2(args, cache: Path) -> None:
    """`embed(store)` end to end; its vectors against torch fp32 encodes of the texts of the view it stored."""
    from curation.embed import Embedder, embed, get_view, load_vectors
    from curation.store import Store, dumps, utcnow
    from curation.store.tables import conversations as conversations_table

    convs = conversations()[: args.limit]
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as home:
        store = Store.open(home)
        with store.begin() as conn:
            conn.execute(conversations_table.insert(), [
                dict(id=cid, messages=dumps(m), n_messages=len(m), ingested_at=utcnow()) for cid, m in convs])
        embedder = Embedder(backend=args.backend, batch_size=args.batch_size, threads=args.threads, cache_dir=cache)
        embedder.load([get_view(None)(m) for _, m in convs[:300]])  # export (cached by part 1) not timed
        first = embed(store, embedder=embedder, progress=False)
        again = embed(store, embedder=embedder, progress=False)
        ids, X = load_vectors(store)
        view = get_view(first["view"])  # like with like: the texts of the view the store embedded
        by_id = dict(convs)
        reference = Embedder(backend="torch", batch_size=args.batch_size, threads=args.threads)
        ref, plain_s, _ = timed(reference.encode, [view(by_id[cid]) for cid in ids])
        cos = (X * ref).sum(axis=1)
    print(f"part 2: curate embed on {len(convs)} conversations (view {first['view']}, {first['backend']}), "
          f"fresh store, load {load()}")
    print(f"  torch fp32 encode of the same view texts {len(convs) / plain_s:7.1f} conv/s ({plain_s:.1f}s)")
    print(f"  first run  {first['embedded']} embedded  {first['embedded'] / first['seconds']:7.1f} conv/s "
          f"({first['seconds']:.1f}s)  ratio {plain_s / first['seconds']:.2f}x")
    print(f"  rerun      {again['embedded']} embedded, {again['skipped']} skipped in {again['seconds']:.3f}s = "
          f"{again['seconds'] / first['seconds']:.2%} of the first run")
    print(f"  quality    cosine to torch fp32 of the same texts: mean {cos.mean():.4f} "
          f"p1 {np.percentile(cos, 1):.4f} min {cos.min():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="first N texts / conversations (default 400)")
    parser.add_argument("--runs", type=int, default=3, help="runs per backend; medians are printed (default 3)")
    parser.add_argument("--backend", default="auto", help="part 2's backend (default auto)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-e2e", action="store_true", help="part 1 only")
    parser.add_argument("--cache", default=None, help="keep the exported models in this folder and reuse them")
    parser.add_argument("--tune", action="store_true", help="part 3: the settings tried, against the default")
    parser.add_argument("--tune-texts", type=int, default=100, help="texts for part 3 (default 100)")
    parser.add_argument("--tune-runs", type=int, default=1, help="runs per setting in part 3 (default 1)")
    args = parser.parse_args()

    cpu = cpu_facts()
    print(f"machine: {cpu['cores']} cores, class {cpu['class']}, flags {' '.join(cpu['flags'])}, "
          f"{cpu['ghz']:.2f} GHz; load average {load()} at start (1/5/15 min; a shared machine: other work runs beside)")
    texts = message_texts()[: args.limit]
    cache = Path(args.cache or tempfile.mkdtemp(prefix="curate-bench-models-"))
    try:
        part1(args, texts, cpu, cache)
        if args.tune:
            from embed_tuning import tune

            tune(args, texts, cpu, cache)
        if not args.skip_e2e:
            part2(args, cache)
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)  # the exported models: hundreds of MB per run
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; load average {load()} at end")


if __name__ == "__main__":
    sys.exit(main())
