"""The objectives and the input rendering, on exact numbers (no training)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from loops.reward.losses import PairwiseLoss, RegressionLoss


class FixedRewards(nn.Module):
    """Returns the batch's `input_ids[:, 0]` as the logits: lets a test choose the rewards exactly."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return type("Out", (), {"logits": input_ids[:, :1].float().repeat(1, 5)})()


def batch(chosen, rejected, margin, length=None):
    ids = torch.tensor([[v] for v in chosen + rejected])
    return {"input_ids": ids, "margin": torch.tensor(margin, dtype=torch.float),
            "length": torch.tensor(length or [0.0] * len(ids), dtype=torch.float)}


def nls(x: float) -> float:
    return -math.log(1 / (1 + math.exp(-x)))


@pytest.mark.parametrize("kind, expected", [
    ("bt", (nls(2) + nls(-1)) / 2),
    ("margin-bt", (nls(2 - 1) + nls(-1 - 3)) / 2),
    ("scaled-bt", (nls(2) * 1 + nls(-1) * 3) / 2),
])
def test_pairwise_losses(kind, expected):
    loss = PairwiseLoss(kind, length_term=False, length_penalty=0.0)
    value = loss(FixedRewards(), batch([3, 1], [1, 2], [1.0, 3.0]))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_length_term_absorbs_length_and_penalty_is_correlation():
    b = batch([3, 1], [1, 2], [1.0, 1.0], length=[5.0, 1.0, 1.0, 5.0])
    plain = PairwiseLoss("bt", length_term=False, length_penalty=0.0)(FixedRewards(), b)
    with_term = PairwiseLoss("bt", length_term=True, length_penalty=0.0)
    with torch.no_grad():
        with_term.length_coef.fill_(0.5)  # logit += 0.5 · (ℓ_c − ℓ_r) = ±2
    expected = (nls(2 + 2) + nls(-1 - 2)) / 2
    assert with_term(FixedRewards(), b).item() == pytest.approx(expected, rel=1e-5)
    penalised = PairwiseLoss("bt", length_term=False, length_penalty=1.0)(FixedRewards(), b)
    r, ell = torch.tensor([3.0, 1, 1, 2]), torch.tensor([5.0, 1, 1, 5])
    corr = torch.corrcoef(torch.stack([r, ell]))[0, 1].item()
    assert penalised.item() == pytest.approx(plain.item() + corr**2, rel=1e-4)


def test_regression_masks_missing_attributes():
    model = FixedRewards()
    b = {"input_ids": torch.tensor([[2], [4]]), "labels": torch.tensor([[3.0, 0, 0, 0, 0], [1.0, 4, 0, 0, 0]]),
         "mask": torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 1, 0, 0, 0]])}
    # predictions are 2 and 4 on every head; only three labels count: (2−3)², (4−1)², (4−4)²
    assert RegressionLoss()(model, b).item() == pytest.approx((1 + 9 + 0) / 3)


def test_plain_rendering_truncates_symmetrically():
    from transformers import AutoTokenizer

    from loops.reward.render import Renderer
    from loops.reward.trainer import default_base

    tok = AutoTokenizer.from_pretrained(default_base())
    r = Renderer(tok, max_length=64)
    assert r.rendering == "plain"  # MiniLM has no chat template
    prompt = [{"role": "user", "content": "word " * 200}]
    long, short = {"role": "assistant", "content": "long " * 300}, {"role": "assistant", "content": "short answer"}
    c, j = r.encode_pair(prompt, long, short)
    assert len(c["input_ids"]) <= 64 and 1 in c["token_type_ids"]
    sep = tok.sep_token_id
    ctx_c = c["input_ids"][: c["input_ids"].index(sep)]
    ctx_j = j["input_ids"][: j["input_ids"].index(sep)]
    assert ctx_c == ctx_j and len(ctx_c) == 1 + (64 - 3) // 3  # the same context tail on both sides: a third
    assert r.encode(prompt, long) == c and r.encode(prompt, short) == j  # a response renders alike in any pair
    assert len(j["input_ids"]) < 64  # a short response does not buy its side more context
    text = tok.decode(r.encode([{"role": "user", "content": "Hi there"}], short)["input_ids"])
    assert text == "[CLS] user : hi there [SEP] short answer [SEP]"


def test_chat_template_rendering(tmp_path):
    from transformers import AutoTokenizer

    from loops.reward.render import Renderer
    from reward_support import CHAT_TEMPLATE
    from loops.reward.trainer import default_base

    tok = AutoTokenizer.from_pretrained(default_base())
    tok.chat_template = CHAT_TEMPLATE
    r = Renderer(tok, max_length=128)
    assert r.rendering == "chat_template"
    ids = r.encode([{"role": "user", "content": "Hi"}], {"role": "assistant", "content": "Hello"})["input_ids"]
    assert tok.decode(ids) == tok.decode(tok(CHAT_TEMPLATE and "<|user|>\nHi\n<|assistant|>\nHello\n",
                                             add_special_tokens=False)["input_ids"])
