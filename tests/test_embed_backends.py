"""The int8 backends through sentence-transformers' own export functions: exported once per machine in the user
cache, offline, and close to the fp32 vectors on real oasst1 text."""
from __future__ import annotations

import numpy as np
import orjson
import pytest

from curation.embed import Embedder, embed, load_vectors
from curation.embed.embedder import fastest_backend
from curation.embed.int8 import installed
from curation.embed.vectors import ensure_space
from curation.embed.views import thread
from test_embed import insert, oasst_threads


@pytest.fixture
def texts(oasst_file) -> list[str]:
    return [orjson.loads(line)["text"] for line in open(oasst_file, encoding="utf-8")][:48]


def reference(texts: list[str]) -> np.ndarray:
    return Embedder(backend="torch").encode(texts)


@pytest.mark.smoke
@pytest.mark.skipif(not (installed("onnxruntime") and installed("optimum.onnxruntime")),
                    reason="the ONNX backend is in the `fast` extra: pip install 'curate[fast]'")
def test_onnx_int8_is_exported_once_and_close_to_fp32(store, home, oasst_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CURATE_CACHE_DIR", str(cache))
    threads = oasst_threads(oasst_file, 24)
    insert(store, threads)
    old = "all-MiniLM-L6-v2|thread|onnx-int8"  # written by the per-batch recipe before issue 21
    ensure_space(store, old, "all-MiniLM-L6-v2", "thread", "onnx-int8", 384, store.start_run("embed", {}))
    result = embed(store, backend="onnx", progress=False)
    assert result["embedded"] == 24 and result["backend"] == "onnx-int8-pertext"
    assert result["space"] == "all-MiniLM-L6-v2|thread|onnx-int8-pertext"
    assert old in result["notice"] and "per batch" in result["notice"] and "curate embed" in result["notice"]
    assert not (home / "models").exists()  # once per machine, not once per home
    exported = list(cache.glob("models/all-MiniLM-L6-v2-*/*-onnxruntime-*/onnx-int8/onnx/model_*int8_*.onnx"))
    # attention, LayerNorm and GELU fused before quantising (the fp32 intermediate is not kept)
    assert len(exported) == 1 and exported[0].name.startswith("model_fused_qint8_")
    assert not (exported[0].parent / "model_fused.onnx").exists()
    stamp = exported[0].stat().st_mtime_ns

    ids, X = load_vectors(store)
    by_id = dict(threads)
    ref = reference([thread(by_id[cid]) for cid in ids])
    cosine = (X * ref).sum(axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95  # 0.9933 and 0.9886 measured with view last_turn

    # a second embedder (a new process, a new view) loads the cached export instead of exporting again
    again = embed(store, backend="onnx", view="last_turn", progress=False)
    assert again["embedded"] == 24
    assert exported[0].stat().st_mtime_ns == stamp
    assert not list(cache.glob("models/*/*/.export-*"))


@pytest.mark.slow
def test_openvino_int8_calibrates_on_local_text_offline(tmp_path, texts, monkeypatch):
    # with the hub unreachable, the library's default calibration set (glue/sst2) would fail: ours is local
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    embedder = Embedder(backend="openvino", cache_dir=tmp_path / "models")
    vectors = embedder.encode(texts)
    assert embedder.backend_label == "openvino-int8"
    assert list((tmp_path / "models").glob("*/*-openvino-*/openvino-int8/openvino/openvino_model_qint8_quantized.xml"))
    cosine = (vectors * reference(texts)).sum(axis=1)
    assert cosine.mean() >= 0.98
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_openvino_with_fewer_threads_than_cores_does_not_pin_them(tmp_path, monkeypatch):
    """One Ray worker per CPU runs a one-thread embedder each; pinned, every worker's thread sat on core 0 (2 workers
    on 2 cores embedded 160 texts/s together, one alone 166). The compiled model must leave them unpinned."""
    import os

    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "cache"))
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: nothing to share")
    one = Embedder(backend="openvino", threads=1)
    one.encode(["the calibration texts come from the first call"])
    compiled = one.model_[0].auto_model.request
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


INSTALLED = {"onnxruntime", "optimum.onnxruntime", "openvino", "optimum.intel"}


@pytest.mark.parametrize("flags, machine, installed, expected", [
    # AVX2 (AMD EPYC here): ONNX one text at a time, measured fastest of the exact int8 backends
    ({"avx", "avx2", "fma"}, "x86_64", INSTALLED, "onnx"),
    ({"avx", "avx2", "fma"}, "x86_64", {"openvino", "optimum.intel"}, "openvino"),
    # AVX-512 VNNI and AMX: OpenVINO's static int8 (earlier figures, other machines: docs/performance.md)
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", INSTALLED, "openvino"),
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}, "x86_64", INSTALLED,
     "openvino"),
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", {"onnxruntime", "optimum.onnxruntime"}, "onnx"),
    (set(), "aarch64", INSTALLED, "torch"),
    ({"avx2"}, "x86_64", set(), "torch"),
])
def test_auto_picks_the_fastest_exact_backend_per_cpu_class(flags, machine, installed, expected, monkeypatch):
    monkeypatch.setattr("curation.embed.embedder.installed", lambda module: module in installed)
    assert fastest_backend(flags, machine) == expected
