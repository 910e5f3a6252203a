"""A text's vector is the same whatever its batch, order, chunk or thread count, on every backend (issue 21).

Each backend embeds real oasst1 texts of mixed lengths whole, then shuffled in batches of other sizes, then with one
thread, then each text alone; every vector must stay within cosine 0.9999 of the same text embedded alone with the
same export. (`--engine ray` against local is in tests/test_engine_ray.py.)
"""
from __future__ import annotations

import numpy as np
import orjson
import pytest

from curation.embed import Embedder

EXACT = 0.9999
BACKENDS = ["torch", "onnx", pytest.param("openvino", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def texts(shared_data) -> list[str]:
    """24 real messages, short and long (long ones fill the model's 256-token window, short ones pad most)."""
    rows = [orjson.loads(line)["text"] for line in open(shared_data / "oasst1-en-validation" /
                                                         "oasst1-en-validation.jsonl", encoding="utf-8")]
    rows = sorted(dict.fromkeys(rows[:400]), key=len)
    return rows[:: max(1, len(rows) // 24)][:24]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_vector_does_not_depend_on_its_batch(backend, texts, cache):
    import torch

    embedder = Embedder(backend=backend, batch_size=16, cache_dir=cache, calibration_texts=texts)
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    worst = {"whole": cosines(embedder.encode(texts), alone).min()}
    rng = np.random.default_rng(7)
    for size in (3, 11):  # each call one batch of texts of mixed lengths: the most padding
        embedder.batch_size = size
        order = rng.permutation(len(texts))
        shuffled = np.empty_like(alone)
        for start in range(0, len(order), size):
            part = order[start : start + size]
            shuffled[part] = embedder.encode([texts[i] for i in part])
        worst[f"shuffled, batches of {size}"] = cosines(shuffled, alone).min()
    threads = torch.get_num_threads()
    try:
        one_thread = Embedder(backend=backend, batch_size=5, threads=1, cache_dir=cache).encode(texts)
    finally:
        torch.set_num_threads(threads)  # the torch backend sets it for the whole process
    worst["one thread, batches of 5"] = cosines(one_thread, alone).min()
    assert min(worst.values()) >= EXACT, worst
