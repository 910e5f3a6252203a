"""Reward-model objectives: Bradley–Terry and its margin/scaled variants, and masked multi-attribute regression.

Each objective is a small `torch.nn.Module` whose `forward(model, batch)` returns the loss, so the trainer's
`compute_loss` is one call and any objective with that signature can be passed in.

Length debiasing (on by default for the pairwise losses) has two parts:
- a product-of-experts length term: the BT logit is `r(x, y_c) − r(x, y_r) + w·(ℓ_c − ℓ_r)` with ℓ = log(1+chars) and
  a learned scalar `w` that is dropped at inference, so the length preference in the labels is explained by `w`
  rather than pushed into the reward model;
- a penalty `λ·corr(r, ℓ)²` on the batch's rewards, so what the model does learn is not a disguised length counter.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from loops.reward_config import PAIRWISE



def _rewards(model: nn.Module, batch: dict, head: int) -> torch.Tensor:
    return model(**_inputs(batch)).logits[:, head].float()


def _inputs(batch: dict) -> dict:
    """What the model reads: token ids, or the frozen trunk's stored states (`trunk.TopModel`)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "hidden_states") if k in batch}


def _corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x - x.mean(), y - y.mean()
    return (x * y).sum() / (x.norm() * y.norm() + 1e-6)


class PairwiseLoss(nn.Module):
    """`bt`: −log σ(Δ); `margin-bt`: −log σ(Δ − m); `scaled-bt`: m · (−log σ(Δ)) (HelpSteer2's scaled BT).

    The batch holds chosen rows then rejected rows (2B sequences), `margin` (B) and `length` (2B) features.
    `head` is the logit read as the reward (0; the helpfulness head for a regression-then-bt model).
    """

    def __init__(self, kind: str = "bt", head: int = 0, length_term: bool = True, length_penalty: float = 0.1):
        super().__init__()
        if kind not in PAIRWISE:
            raise ValueError(f"unknown pairwise loss {kind!r}; use one of {', '.join(PAIRWISE)}")
        self.kind, self.head, self.length_penalty = kind, head, length_penalty
        self.length_coef = nn.Parameter(torch.zeros(())) if length_term else None

    def forward(self, model: nn.Module, batch: dict) -> torch.Tensor:
        r = _rewards(model, batch, self.head)
        n = r.shape[0] // 2
        r_c, r_r = r[:n], r[n:]
        length, margin = batch["length"].to(r.dtype), batch["margin"].to(r.dtype)
        delta = r_c - r_r
        if self.length_coef is not None:
            delta = delta + self.length_coef * (length[:n] - length[n:])
        if self.kind == "margin-bt":
            loss = -F.logsigmoid(delta - margin)
        elif self.kind == "scaled-bt":
            loss = -F.logsigmoid(delta) * margin
        else:
            loss = -F.logsigmoid(delta)
        loss = loss.mean()
        if self.length_penalty and r.shape[0] > 2:
            loss = loss + self.length_penalty * _corr(r, length) ** 2
        return loss


class RegressionLoss(nn.Module):
    """MSE over the attribute heads; attributes an annotator did not give are masked out (`mask` is 0 there)."""

    def forward(self, model: nn.Module, batch: dict) -> torch.Tensor:
        pred = model(**_inputs(batch)).logits.float()
        mask = batch["mask"].to(pred.dtype)
        return ((pred - batch["labels"].to(pred.dtype)) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)
