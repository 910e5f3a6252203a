"""One training run of a reward model: transformers' Trainer with a Curate objective (imported only to train)."""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from typing import Any

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from loops.reward.checkpoint import LAYER
from loops.reward.padding import pad
from loops.reward_config import TrainConfig


def _batch(seqs: list, pad_id: int) -> dict:
    """Encodings → padded ids; the frozen trunk's stored states → padded `hidden_states` (see `trunk`)."""
    if isinstance(seqs[0], dict):
        return pad(seqs, pad_id)
    from loops.reward.trunk import pad_states

    hidden, mask = pad_states(seqs)
    return {"hidden_states": hidden, "attention_mask": mask}


def collate(rows: list[dict], pad_id: int) -> dict:
    """Pairs → one padded batch of chosen rows then rejected rows (one forward pass); ratings → rows + labels."""
    if "chosen" in rows[0]:
        batch = _batch([r["chosen"] for r in rows] + [r["rejected"] for r in rows], pad_id)
        batch["margin"] = torch.tensor([r["margin"] for r in rows])
        batch["length"] = torch.tensor([r["length"][0] for r in rows] + [r["length"][1] for r in rows])
        return batch
    batch = _batch([r["input"] for r in rows], pad_id)
    batch["labels"] = torch.tensor([r["labels"] for r in rows])
    batch["mask"] = torch.tensor([r["mask"] for r in rows])
    return batch


def trainable_layers(model: Any) -> int:
    """How many transformer layers have trainable weights (the head is not counted)."""
    return len({m.group(1) for name, p in model.named_parameters() if p.requires_grad and (m := LAYER.search(f".{name}"))})


class ObjectiveTrainer(Trainer):
    """transformers' Trainer with a Curate objective (`losses`) as its loss, batches of similar length, and the
    objective's own parameters (the learned length coefficient) in the optimizer and, under DDP, averaged."""

    def __init__(self, *args: Any, objective: Any, lengths: list[int], seed: int, world: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.curate_objective, self.curate_lengths, self.curate_seed, self.curate_world = objective, lengths, seed, world

    def create_optimizer(self):
        optimizer = super().create_optimizer()
        extra = list(self.curate_objective.parameters())
        if extra and not any(p is extra[0] for g in optimizer.param_groups for p in g["params"]):
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})  # the learned length coefficient
        return optimizer

    def _get_train_sampler(self, *args: Any, **kwargs: Any):
        # Batches of similar length waste little on padding: the main CPU speed-up. Order is seeded.
        return LengthGroupedSampler(self.args.train_batch_size, lengths=self.curate_lengths,
                                    generator=torch.Generator().manual_seed(self.curate_seed))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = self.curate_objective(model, inputs)
        return (loss, None) if return_outputs else loss

    def training_step(self, *args: Any, **kwargs: Any):
        loss = super().training_step(*args, **kwargs)
        if self.curate_world > 1:  # DDP averages the model's gradients; the objective's own (length coefficient) here
            for p in self.curate_objective.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.curate_world
        return loss


def fit(model: Any, tokenizer: Any, rows: list[dict], objective: Any, cfg: TrainConfig, epochs: float, show: bool,
        world: int = 1) -> tuple[dict, Any]:
    """One Trainer run; returns its loss curve summary and time, and the trainer. With `world` processes each takes
    `batch_size / world` pairs of every step (DDP averages their gradients), so a step sees the same pairs."""
    cuda = torch.cuda.is_available()
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
        trainer = ObjectiveTrainer(model=model, args=args, train_dataset=rows,
                                   data_collator=lambda batch: collate(batch, tokenizer.pad_token_id),
                                   objective=objective, lengths=[r["n_tokens"] for r in rows], seed=cfg.seed,
                                   world=world)
        if not show:  # without a progress bar the Trainer prints every log dict; they stay in state.log_history
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
