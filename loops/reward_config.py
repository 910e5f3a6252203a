"""`TrainConfig`: reward-model training settings (re-exported as `loops.reward.TrainConfig`).

It lives outside the `loops.reward` package, whose import loads torch, so that the CLI can show these defaults in
`curate reward train --help` without the 2 s that importing torch takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PAIRWISE = ("bt", "margin-bt", "scaled-bt")  # objectives on preference pairs (see `loops.reward.losses`)
LOSSES = PAIRWISE + ("regression", "regression-then-bt")  # and on rated responses, alone or first


@dataclass
class TrainConfig:
    """Reward-model training settings; `curate reward train` options map onto these fields."""

    base: str | None = field(default=None, metadata={"help": "HF model name or folder; None = the bundled MiniLM."})
    loss: str = field(default="bt", metadata={"help": " | ".join(LOSSES)})
    max_length: int = field(default=96, metadata={"help": "Tokens per (context, response) input: the context's tail "
                                                    "(at most a third) and the response's head."})
    batch_size: int = field(default=16, metadata={"help": "Pairs (or rated responses) per optimiser step."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the pairs."})
    regression_epochs: float = field(default=2.0, metadata={"help": "Passes over the ratings (regression stages)."})
    learning_rate: float | None = field(default=None, metadata={
        "help": "Peak AdamW learning rate (linear decay, 10% warm-up); None = 5e-5 when every layer trains, 3e-4 when "
                "only the top layer and the head do (few parameters, few steps)."})
    seed: int = field(default=0, metadata={"help": "Seeds the head initialisation, batch order and dropout."})
    length_term: bool = field(default=True, metadata={"help": "Learn a separate length coefficient in the BT logit."})
    length_penalty: float = field(default=0.1, metadata={"help": "Weight of corr(reward, length)² in the loss."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps per stage (-1: run the epochs)."})
    reuse_frozen: bool = field(default=True, metadata={
        "help": "On a CPU, run a BERT-style encoder's frozen layers once per distinct input instead of every step."})
    freeze_layers: int | None = field(default=None, metadata={
        "help": "Freeze the embeddings and this many bottom layers; None = all but the top layer on a CPU, 0 on a GPU. "
                "On a CPU the frozen part of a BERT-style encoder runs once per distinct input (see `trunk`)."})
    lora: bool = field(default=False, metadata={
        "help": "Train LoRA adapters (peft) instead of the base's weights; the classification head trains in full."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)."})
    lora_target_modules: tuple[str, ...] | None = field(default=None, metadata={
        "help": "Module names that get adapters; None = q_proj, k_proj, v_proj, o_proj on Llama/Qwen/Mistral-style "
                "bases, else peft's default for the architecture (query, value on BERT)."})
    lora_keep: bool = field(default=False, metadata={
        "help": "Save the adapter (and the head) instead of merging it into the base; `RewardModel` loads it on the "
                "base recorded in curate_reward.json."})
    bf16: bool | None = field(default=None, metadata={
        "help": "Train in bfloat16 mixed precision; None = on where the GPU supports it. Needs a CUDA GPU."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Recompute activations in the backward pass (less memory, about 30% more time); None = on a GPU."})
    num_processes: int = field(default=1, metadata={
        "help": "Data-parallel processes (DDP through `accelerate launch`: gloo on CPUs, nccl on GPUs); batch_size "
                "stays the pairs per optimiser step over all of them."})
    accelerate_config: str | None = field(default=None, metadata={
        "help": "An `accelerate config` YAML file (DeepSpeed ZeRO-3, FSDP, several machines) for the launch."})
