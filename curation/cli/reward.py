"""`curate reward …`: train, evaluate, list, promote reward models and score the store (loops.reward, loops.registry)."""
from __future__ import annotations

import click

from curation.cli.common import SEED, home_option, json_option, reports
from curation.cli.engine import engine_options
from loops.reward_config import LOSSES, TrainConfig

_TRAIN = TrainConfig()


@click.group()
def reward() -> None:
    """Reward models: train on exported preferences, evaluate, promote through the gate, score traffic."""


@reward.command()
@click.option("--data", required=True, type=click.Path(exists=True), help="Export folder or TRL-format JSONL/Parquet file.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the checkpoint.")
@click.option("--base", default=None, help="HF model name or folder (default: the bundled all-MiniLM-L6-v2).")
@click.option("--loss", type=click.Choice(LOSSES), default=_TRAIN.loss, show_default=True,
              help="bt: Bradley–Terry, the chosen reply scores above the rejected one; margin-bt: by at least the "
                   "pair's margin; scaled-bt: BT weighted by the margin (HelpSteer2); regression: predict the five "
                   "attributes of a `curate export ratings` folder given as --data; regression-then-bt: regression "
                   "on --ratings, then scaled-bt on the pairs (docs/reward-models.md).")
@click.option("--ratings", default=None, type=click.Path(exists=True),
              help="`curate export ratings` folder (regression-then-bt's first stage).")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=_TRAIN.epochs, show_default=True,
              help="Passes over the training pairs; a fraction (0.5) trains on part of one.")
@click.option("--batch-size", type=click.IntRange(1), default=_TRAIN.batch_size, show_default=True,
              help="Pairs (or rated responses) per optimiser step.")
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate (default: 5e-5 when every layer trains, 3e-4 when only the top layer does).")
@click.option("--max-length", type=click.IntRange(8), default=_TRAIN.max_length, show_default=True,
              help="Tokens per (context, response) input: the context's tail (at most a third) and the reply's head.")
@click.option("--max-steps", type=int, default=-1, callback=lambda _c, _p, v: _max_steps(v),
              help="Stop each stage after N steps (smoke runs); -1 runs the epochs.")
@click.option("--no-length-debias", is_flag=True, help="Plain objective, without the length term and penalty.")
@click.option("--seed", type=SEED, default=_TRAIN.seed, show_default=True,
              help="Seeds the head's initialisation, the batch order and dropout: same data and seed, same model.")
@click.option("--lora", is_flag=True, help="Train LoRA adapters (peft) on the base instead of its weights; the head "
                                           "trains in full. Saved merged into the base unless --lora-keep.")
@click.option("--lora-r", type=click.IntRange(1, 1024), default=_TRAIN.lora_r, show_default=True, help="LoRA rank.")
@click.option("--lora-alpha", type=click.IntRange(1, 4096), default=_TRAIN.lora_alpha, show_default=True,
              help="LoRA scaling numerator: updates are scaled by alpha / r.")
@click.option("--lora-target", multiple=True,
              help="Module name that gets an adapter (repeat it); default q_proj, k_proj, v_proj, o_proj on "
                   "Llama/Qwen/Mistral-style bases, else peft's default for the architecture.")
@click.option("--lora-keep", is_flag=True, help="Save the adapter instead of merging it; scoring loads it on the "
                                                "base recorded in curate_reward.json.")
@click.option("--bf16", is_flag=True, default=None,
              help="bfloat16 mixed precision (CUDA GPUs with bf16 only; an error on a CPU). Default: on where the "
                   "GPU supports it.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute activations in the backward pass: less memory, about 30% more time. Default: on a GPU.")
@click.option("--num-processes", type=click.IntRange(1, 1024), default=_TRAIN.num_processes, show_default=True,
              help="Data-parallel processes through `accelerate launch` (DDP; gloo on CPUs, one per GPU with "
                   "nccl). --batch-size stays the pairs per step over all of them.")
@click.option("--accelerate-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="`accelerate config` YAML (DeepSpeed ZeRO-3, FSDP, several machines) to launch with; see "
                   "docs/reward-models.md.")
@home_option
@json_option
@reports
def train(data, out, base, loss, ratings, epochs, batch_size, learning_rate, max_length, max_steps, no_length_debias,
          seed, lora, lora_r, lora_alpha, lora_target, lora_keep, bf16, gradient_checkpointing, num_processes,
          accelerate_config, home, as_json):
    """Fine-tune a reward model and register it as a candidate."""
    from curation.store import Store
    from loops.reward import TrainConfig
    from loops.reward import train as run_train

    if (lora_keep or lora_target) and not lora:
        raise click.UsageError("--lora-keep and --lora-target need --lora")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_length=max_length,
                      max_steps=max_steps, seed=seed, length_term=not no_length_debias,
                      length_penalty=0.0 if no_length_debias else TrainConfig.length_penalty, lora=lora,
                      lora_r=lora_r, lora_alpha=lora_alpha, lora_target_modules=tuple(lora_target) or None,
                      lora_keep=lora_keep, bf16=bf16, gradient_checkpointing=gradient_checkpointing,
                      num_processes=num_processes, accelerate_config=accelerate_config)
    result = run_train(data, out, base=base, loss=loss, config=cfg, ratings=ratings, store=Store.open(home))
    if "model" not in result:  # a rank other than 0 under a user's own `accelerate launch`: rank 0 reports
        return None
    acc = result["eval_accuracy"]
    return result, (f"trained {result['version']} ({loss}) on {result['train_pairs']:,} pairs in {result['seconds']} s; "
                    f"held-out accuracy {'n/a' if acc is None else f'{acc:.3f}'}; saved to {result['model']}")


def _max_steps(value: int) -> int:
    if value != -1 and value < 1:  # 0 or -2 would quietly mean "run the epochs" to transformers
        raise click.BadParameter(f"{value} is not -1 (run the epochs) or a number of steps ≥ 1")
    return value


@reward.command("eval")
@click.option("--model", required=True, help="Checkpoint folder or registry version.")
@click.option("--pairs", required=True, type=click.Path(exists=True), help="TRL-format JSONL (or an export folder: its test split).")
@home_option
@json_option
@reports
def eval_(model, pairs, home, as_json):
    """Pairwise accuracy overall, per cluster and per source, with 95% Wilson intervals."""
    from curation.store import Store
    from loops.registry import resolve_model
    from loops.reward import evaluate

    _, path = resolve_model(Store.open(home), model)
    r = evaluate(path, pairs)
    lines = [f"accuracy {r['accuracy']} (95% CI {r['ci_low']}–{r['ci_high']}, n={r['n']}); "
             f"longer-answer baseline {r['length_baseline']}; corr(reward, length) {r['length_correlation']}"]
    lines += [f"  cluster {k}: {v['accuracy']} (n={v['n']})" for k, v in r["by_cluster"].items()]
    lines += [f"  source {k}: {v['accuracy']} (n={v['n']})" for k, v in r["by_source"].items()]
    return r, "\n".join(lines)


@reward.command("list")
@home_option
@json_option
@reports
def list_(home, as_json):
    """Registered reward models, oldest first."""
    from curation.store import Store
    from loops.registry import list_models

    models = list_models(Store.open(home))
    lines = [f"{m['version']}  {m['status']:<9} {m['loss']:<18} data {m['data_version']}  "
             f"acc {((m['metrics'] or {}).get('eval') or {}).get('accuracy')}" for m in models]
    return {"models": models}, "\n".join(lines) or "no reward models yet; run `curate reward train`"


@reward.command()
@click.argument("version")
@click.option("--gate", default=None, type=click.Path(exists=True),
              help="Gate pairs (JSONL or export folder); the first one given stays the fixed gate set.")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Accuracy a challenger may lose against the champion and the longer-answer baseline; on a "
                   "large cluster the gate also allows the drop's 95% CI half-width.")
@click.option("--force", is_flag=True, help="Promote even if the gate fails (recorded as forced).")
@home_option
@json_option
@reports
def promote(version, gate, tolerance, force, home, as_json):
    """Make VERSION (or the model in the folder `reward train --out` wrote) the champion if it passes the gate on the
    fixed gate pairs.

    It must score at least the longer-answer baseline's and the champion's accuracy minus --tolerance, and not
    significantly worse than the champion on each of the three largest clusters (docs/reward-models.md).
    """
    from curation.store import Store
    from loops.reward.gate import explain
    from loops.reward.gate import promote as run_promote

    r = run_promote(Store.open(home), version, gate=gate, tolerance=tolerance, force=force)
    return r, "\n".join([f"{r['challenger']} {r['reason']}", *(f"  {line}" for line in explain(r["figures"]))])


@reward.command()
@click.option("--model", default=None, help="Checkpoint folder or registry version (default: the champion).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Conversations per forward pass (default: 16 with onnx, 64 with torch).")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "openvino"]), default="auto", show_default=True,
              help="onnx (int8 weights) or openvino: export the model once (kept beside it), score faster on a CPU. "
                   "auto: torch on a GPU, else onnx when installed.")
@engine_options
@home_option
@json_option
@reports
def score(model, batch_size, backend, engine, ray_address, home, as_json):
    """Score conversations not yet scored by this model; stores the reward (and attributes) in `rewards`."""
    from curation.cli.engine import engine_usage
    from curation.store import Store
    from loops.reward import score as run_score

    with engine_usage():
        r = run_score(Store.open(home), model=model, batch_size=batch_size, backend=backend, engine=engine,
                      address=ray_address)
    workers = f" on {r['workers']} Ray workers" if "workers" in r else ""
    return r, f"scored {r['scored']:,} conversations with {r['model_version']} ({r['per_second']} conv/s){workers}"
