"""Training rows: pairs and ratings encoded for the reward model, and the frozen trunk's outputs computed once."""
from __future__ import annotations

import time
from typing import Any

from annotations.template import ATTRIBUTES
from loops.reward.distributed import process_rank
from loops.reward.render import Renderer, length_feature


def pair_features(renderer: Renderer, pairs: list[dict]) -> list[dict]:
    """Training rows of pairs: both encodings, the margin and the length features."""
    rows = []
    for p in pairs:
        chosen, rejected = renderer.encode_pair(p["prompt"], p["chosen"][0], p["rejected"][0])
        margin = p.get("margin")
        rows.append({
            "chosen": chosen, "rejected": rejected,
            "margin": 1.0 if margin is None else float(margin),
            "length": (length_feature(p["chosen"][0]), length_feature(p["rejected"][0])),
            "n_tokens": max(len(chosen["input_ids"]), len(rejected["input_ids"])),
        })
    return rows


def rating_features(renderer: Renderer, ratings: list[dict]) -> list[dict]:
    """Training rows of ratings: the encoding, the five attribute labels and a mask of the rated ones."""
    rows = []
    for r in ratings:
        enc = renderer.encode(r["prompt"], r["response"][0])
        values = [r.get(a) for a in ATTRIBUTES]
        rows.append({
            "input": enc,
            "labels": [0.0 if v is None else float(v) for v in values],
            "mask": [0.0 if v is None else 1.0 for v in values],
            "n_tokens": len(enc["input_ids"]),
        })
    return rows


def run_trunk(trunk: Any, rows: list[dict], keys: tuple[str, ...], pad_id: int) -> dict:
    """Replace each row's encodings under `keys` by the frozen trunk's output; each distinct input runs once."""
    started = time.perf_counter()
    index: dict[tuple, int] = {}
    inputs: list[dict] = []
    for row in rows:
        for key in keys:
            enc = row[key]
            signature = (tuple(enc["input_ids"]), tuple(enc.get("token_type_ids", ())))
            if signature not in index:
                index[signature] = len(inputs)
                inputs.append(enc)
            row[key] = index[signature]
    states = shared_features(trunk, inputs, pad_id)
    for row in rows:
        for key in keys:
            row[key] = states[row[key]]
    return {"distinct_inputs": len(inputs), "trunk_seconds": round(time.perf_counter() - started, 1)}


def shared_features(trunk: Any, inputs: list[dict], pad_id: int) -> list:
    """The frozen trunk's states of `inputs`. Under DDP every rank needs them all: each computes every world-th
    input and the ranks exchange their shares (gloo), so the trunk pass is split like the steps are."""
    rank, world = process_rank()
    if world == 1:
        return trunk.features(inputs, pad_id)
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState(cpu=True)  # starts the process group that the Trainer then uses
    shares: list = [None] * world
    dist.all_gather_object(shares, trunk.features(inputs[rank::world], pad_id))
    return [shares[i % world][i // world] for i in range(len(inputs))]
