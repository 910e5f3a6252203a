"""`train`: fine-tune a reward model with transformers' Trainer and our own objectives (see `losses`).

The model is a plain `AutoModelForSequenceClassification` checkpoint: one logit for the pairwise losses, five
(HelpSteer2's attributes, helpfulness first) for the regression recipes. Beside it we write `curate_reward.json`
(how to render inputs and which logit is the reward) and a model card. Decoder bases (Llama, Qwen, Mistral, …) read
their chat template's rendering and score at their last token; LoRA adapters (peft) are merged at save time, or kept
(`lora_keep`). With `num_processes` > 1 the training runs data-parallel under `accelerate launch` (`distributed`);
inside such a launch every rank trains and only rank 0 saves, evaluates and returns the full result.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from annotations.template import ATTRIBUTES
from curation.errors import InputError
from loops.reward.checkpoint import (META_FILE, add_lora, data_version, default_base, freeze_bottom, save_model,
                                     write_card)
from loops.reward.data import load_pairs, load_ratings
from loops.reward.distributed import process_rank
from loops.reward.features import pair_features, rating_features, run_trunk
from loops.reward.losses import PairwiseLoss, RegressionLoss
from loops.reward.render import Renderer
from loops.reward_config import LOSSES, TrainConfig

__all__ = ["META_FILE", "TrainConfig", "default_base", "process_rank", "train"]


def train(
    data: str | Path,
    out: str | Path,
    base: str | None = None,
    loss: str = "bt",
    config: TrainConfig | None = None,
    ratings: str | Path | None = None,
    store: Any = None,
    progress: bool | None = None,
    trunk_memo: dict | None = None,
) -> dict:
    """Train a reward model on `data` (pairs; ratings for `loss="regression"`) and save it to `out`.

    `ratings` is the `curate export ratings` folder the regression-then-bt recipe starts from. With `store`, the
    model is registered as a candidate. `trunk_memo` (a dict the caller keeps) carries the frozen layers' outputs
    from one call to the next, for callers that train many models on the same texts (benchmarks, cross-validation). Returns {"model", "loss", "train_pairs", "eval_accuracy", "seconds", …}.

    `config.num_processes` > 1 (or `config.accelerate_config`) launches the training on several processes
    (`distributed`) and returns rank 0's result. Inside a launch every rank trains; rank 0 saves, evaluates and
    returns the result, the other ranks return {"rank": r}.
    """
    cfg = dataclasses.replace(config or TrainConfig(), loss=loss, **({"base": base} if base else {}))
    if cfg.loss not in LOSSES:
        raise InputError(f"unknown loss {cfg.loss!r}; use one of {', '.join(LOSSES)}")
    base_name = cfg.base or default_base()
    if Path(base_name).is_dir():  # recorded in curate_reward.json: a kept adapter is loaded on it from anywhere
        base_name = str(Path(base_name).absolute())
    out = Path(out)
    rank, world = process_rank()
    if cfg.batch_size % (n := world if world > 1 else cfg.num_processes):
        raise InputError(f"--batch-size {cfg.batch_size} is the pairs per step over all {n} processes; "
                         f"use a multiple of {n}")
    from loops.reward.distributed import LAUNCHED, launch

    if world == 1 and not os.environ.get(LAUNCHED) and (cfg.num_processes > 1 or cfg.accelerate_config):
        result = launch(data, out, cfg, ratings=ratings, progress=progress)
        return _register(store, result, out, base_name, cfg.loss)

    import torch

    cuda = torch.cuda.is_available()
    if cfg.bf16 and not (cuda and torch.cuda.is_bf16_supported()):
        raise InputError("--bf16 needs a CUDA GPU with bfloat16 support; on a CPU training runs in float32, "
                         "leave --bf16 off")
    started = time.perf_counter()
    pairs, rating_rows = _training_rows(cfg, data, ratings)
    model, tokenizer, n_frozen, frozen = _prepare_model(cfg, base_name, cuda)
    show = progress if progress is not None else sys.stderr.isatty()
    renderer = Renderer(tokenizer, cfg.max_length)
    history, objective, trainer = _fit_all(cfg, model, tokenizer, renderer, pairs, rating_rows, n_frozen, cuda, show,
                                           world, trunk_memo)
    train_seconds = time.perf_counter() - started

    # DeepSpeed ZeRO-3 and FSDP shard the weights: gathering them is collective, so every rank takes part
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if sharded else None
    if rank != 0:
        return {"rank": rank}
    out.mkdir(parents=True, exist_ok=True)
    adapter = save_model(model, out, cfg, state_dict)
    tokenizer.save_pretrained(out)
    meta = {
        "loss": cfg.loss,
        "base": base_name,
        "reward_head": 0,
        "attributes": list(ATTRIBUTES) if _n_labels(cfg) > 1 else None,
        "rendering": renderer.rendering,
        "max_length": cfg.max_length,
        "context_share": renderer.context_share,
        "frozen_parameters": frozen,
        "frozen_layers": n_frozen,
        "adapter": adapter,
        "processes": world,
        "length_coef": float(objective.length_coef.detach()) if objective is not None and objective.length_coef is not None else None,
        "data": str(data),
        "data_version": data_version(data),
        "config": dataclasses.asdict(cfg),
        "history": history,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    metrics = _evaluate(out, data, meta, pairs, rating_rows, train_seconds, show)
    result = {
        "model": str(out),
        "loss": cfg.loss,
        "train_pairs": len(pairs),
        "eval_accuracy": metrics["eval"]["accuracy"] if metrics["eval"] else None,
        "seconds": round(time.perf_counter() - started, 1),
        "metrics": metrics,
    }
    return _register(store, result, out, base_name, cfg.loss)


def _training_rows(cfg: TrainConfig, data: str | Path, ratings: str | Path | None) -> tuple[list[dict], list[dict]]:
    """(pairs, rating rows) the recipe trains on."""
    if cfg.loss == "regression":
        rating_rows, pairs = load_ratings(data), []
    else:
        pairs = load_pairs(data)
        rating_rows = []
        if cfg.loss == "regression-then-bt":
            if ratings is None:
                raise InputError("regression-then-bt needs ratings: pass --ratings DIR from `curate export ratings`")
            rating_rows = load_ratings(ratings)
    if not pairs and not rating_rows:
        raise InputError(f"{data} holds no training rows; export some first (`curate export preferences`)")
    return pairs, rating_rows


def _n_labels(cfg: TrainConfig) -> int:
    """Five logits (HelpSteer2's attributes, helpfulness first) for the regression recipes, else one."""
    return len(ATTRIBUTES) if cfg.loss in ("regression", "regression-then-bt") else 1


def _prepare_model(cfg: TrainConfig, base_name: str, cuda: bool) -> tuple[Any, Any, int, int]:
    """The base with its head (one logit, or five for the regression recipes), its bottom frozen or LoRA added;
    returns (model, tokenizer, layers frozen, parameters frozen)."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.set_seed(cfg.seed)
    transformers.logging.set_verbosity_error()  # "newly initialised head" warnings are expected here
    tokenizer = AutoTokenizer.from_pretrained(base_name)
    if tokenizer.pad_token is None:  # decoder-only bases; see `loops.reward.padding` for where they pool
        tokenizer.pad_token = tokenizer.eos_token
    n_labels = _n_labels(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_name, num_labels=n_labels, problem_type="regression", dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    if n_labels > 1:
        model.config.id2label = dict(enumerate(ATTRIBUTES))
        model.config.label2id = {a: i for i, a in enumerate(ATTRIBUTES)}
    n_layers = model.config.num_hidden_layers
    n_frozen = 0 if cfg.lora else min(
        n_layers, cfg.freeze_layers if cfg.freeze_layers is not None else (0 if cuda else n_layers - 1))
    frozen = freeze_bottom(model, n_frozen)
    if cfg.lora:
        model = add_lora(model, cfg)
    return model, tokenizer, n_frozen, frozen


def _fit_all(cfg: TrainConfig, model: Any, tokenizer: Any, renderer: Renderer, pairs: list[dict],
             rating_rows: list[dict], n_frozen: int, cuda: bool, show: bool, world: int,
             trunk_memo: dict | None) -> tuple[dict, Any, Any]:
    """The recipe's Trainer runs: regression on ratings, then the pairwise objective; returns (history, the
    pairwise objective or None, the last trainer)."""
    from loops.reward.fit import fit
    from loops.reward.trunk import FrozenTrunk, TopModel, supports

    checkpointing = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    # The frozen bottom's output never changes: on a CPU compute it once per distinct input and train the top on it
    trunk = (FrozenTrunk(model, n_frozen, trunk_memo)
             if n_frozen and cfg.reuse_frozen and not cuda and not checkpointing and supports(model) else None)
    trained = TopModel(model, n_frozen) if trunk else model
    history: dict[str, Any] = {}
    if rating_rows:
        rows = rating_features(renderer, rating_rows)
        cached = run_trunk(trunk, rows, ("input",), tokenizer.pad_token_id) if trunk else {}
        fitted, trainer = fit(trained, tokenizer, rows, RegressionLoss(), cfg, cfg.regression_epochs, show, world)
        history["regression"] = {**fitted, **cached}
    objective = None
    if pairs:
        objective = PairwiseLoss("scaled-bt" if cfg.loss == "regression-then-bt" else cfg.loss, head=0,
                                 length_term=cfg.length_term, length_penalty=cfg.length_penalty)
        rows = pair_features(renderer, pairs)
        cached = run_trunk(trunk, rows, ("chosen", "rejected"), tokenizer.pad_token_id) if trunk else {}
        fitted, trainer = fit(trained, tokenizer, rows, objective, cfg, cfg.epochs, show, world)
        history["pairwise"] = {**fitted, **cached}
    return history, objective, trainer


def _evaluate(out: Path, data: str | Path, meta: dict, pairs: list[dict], rating_rows: list[dict],
              train_seconds: float, show: bool) -> dict:
    """Evaluate the saved model on the held-out pairs; write the metrics into its meta file and its card."""
    from loops.reward.evaluate import evaluate

    test_pairs = load_pairs(data, split="test") if pairs else []
    evaluation = evaluate(out, test_pairs, progress=show) if test_pairs else None
    history = meta["history"]
    metrics = {
        "train_pairs": len(pairs),
        "train_ratings": len(rating_rows),
        "train_seconds": round(train_seconds, 1),
        "pairs_per_second": round(history["pairwise"]["pairs_seen"] / max(history["pairwise"]["seconds"], 1e-9), 2)
        if pairs else None,
        "eval": evaluation,
    }
    meta["metrics"] = metrics
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    write_card(out, meta)
    return metrics


def _register(store: Any, result: dict, out: Path, base_name: str, loss: str) -> dict:
    """With a store, record the saved model as a candidate (once, by the process that launched the training)."""
    if store is not None:
        from loops.registry import register

        meta = json.loads((out / META_FILE).read_text())
        result["version"] = register(store, out, base=base_name, loss=loss, data_version=meta["data_version"],
                                     metrics=result["metrics"])
    return result
