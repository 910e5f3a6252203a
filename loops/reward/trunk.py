"""Train only the top of a BERT-style encoder: the frozen bottom runs once per distinct input, not once per step.

On a CPU, a frozen layer still costs its forward pass on every step of every epoch, although its output never
changes. `FrozenTrunk.features` runs the embeddings and the frozen bottom layers once per distinct token sequence
(an input in several pairs counts once) and keeps their output (float16, unpadded); `TopModel` then runs only the
trainable top layers, the pooler and the classification head on those stored states. The weights stay those of the
wrapped `*ForSequenceClassification` model, so saving it gives the same standard checkpoint as the full path, and
`TopModel(features)` equals `model(inputs)` (checked in the tests).

Supported: encoders laid out like BERT (`base_model.embeddings`, `base_model.encoder.layer`, `base_model.pooler`,
`dropout`, `classifier`: BERT, MiniLM, …). Anything else (decoders, RoBERTa's head) takes the full path.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from loops.reward.padding import pad


def supports(model: Any) -> bool:
    base = model.base_model
    return (all(hasattr(base, a) for a in ("embeddings", "encoder"))
            and hasattr(base.encoder, "layer") and getattr(base, "pooler", None) is not None
            and hasattr(model, "dropout") and hasattr(model, "classifier"))


def _mask(model: Any, attention_mask: torch.Tensor, hidden: torch.Tensor) -> Any:
    """The mask the layers take, as the model's own forward builds it (transformers 4 and 5 differ)."""
    base = model.base_model
    if hasattr(base, "get_extended_attention_mask"):  # transformers 4
        return base.get_extended_attention_mask(attention_mask, attention_mask.shape, dtype=hidden.dtype)
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask)


def _run(layers: Any, hidden: torch.Tensor, mask: Any) -> torch.Tensor:
    for layer in layers:
        out = layer(hidden, attention_mask=mask)
        hidden = out[0] if isinstance(out, tuple) else out  # a transformers 5 layer returns the tensor itself
    return hidden


class FrozenTrunk:
    """The embeddings and the bottom `n_layers` layers of `model` (which must be frozen), run without gradients."""

    def __init__(self, model: Any, n_layers: int, memo: dict | None = None):
        self.model, self.n_layers = model, n_layers
        # Outputs kept across runs by the caller (cross-validation, several losses on one base), filed under a
        # fingerprint of the frozen weights, so a memo is only ever reused for the same frozen computation.
        self.memo = None if memo is None else memo.setdefault(self.fingerprint(), {})

    @torch.no_grad()
    def fingerprint(self) -> tuple:
        base = self.model.base_model
        params = list(base.embeddings.parameters()) + [p for layer in base.encoder.layer[: self.n_layers]
                                                        for p in layer.parameters()]
        return (self.n_layers, tuple(round(float(p.double().sum()), 4) for p in params))

    @torch.inference_mode()
    def features(self, inputs: list[dict], pad_id: int, batch_size: int = 64) -> list[torch.Tensor]:
        """Per input, the (its length × hidden) states after the frozen layers, in float16."""
        base = self.model.base_model
        was_training = base.training
        base.eval()
        keys = [(tuple(e["input_ids"]), tuple(e.get("token_type_ids", ()))) for e in inputs]
        out: list[torch.Tensor | None] = [None if self.memo is None else self.memo.get(k) for k in keys]
        order = sorted((i for i in range(len(inputs)) if out[i] is None), key=lambda i: len(inputs[i]["input_ids"]))
        device = next(base.parameters()).device
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in pad([inputs[i] for i in idx], pad_id).items()}
            hidden = base.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
            hidden = _run(base.encoder.layer[: self.n_layers], hidden, _mask(self.model, batch["attention_mask"], hidden))
            hidden = hidden.to(torch.float16).cpu()
            for row, i in enumerate(idx):
                out[i] = hidden[row, : len(inputs[i]["input_ids"])].clone()
                if self.memo is not None:
                    self.memo[keys[i]] = out[i]
        base.train(was_training)
        return out  # type: ignore[return-value]


class TopModel(nn.Module):
    """The trainable top of `model`, fed the states `FrozenTrunk` stored: logits as `model(**inputs).logits` gives."""

    def __init__(self, model: Any, n_frozen: int):
        super().__init__()
        self.model, self.n_frozen = model, n_frozen

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SequenceClassifierOutput:
        model, base = self.model, self.model.base_model
        hidden = hidden_states.to(next(model.classifier.parameters()).dtype)
        hidden = _run(base.encoder.layer[self.n_frozen :], hidden, _mask(model, attention_mask, hidden))
        return SequenceClassifierOutput(logits=model.classifier(model.dropout(base.pooler(hidden))))


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored states → a zero-padded (batch, width, hidden) tensor and its attention mask."""
    width = max(s.shape[0] for s in states)
    hidden = torch.zeros(len(states), width, states[0].shape[1], dtype=states[0].dtype)
    mask = torch.zeros(len(states), width, dtype=torch.long)
    for i, s in enumerate(states):
        hidden[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = 1
    return hidden, mask
