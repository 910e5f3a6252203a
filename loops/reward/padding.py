"""Token encodings → one padded batch of tensors; shared by training, the frozen trunk and scoring."""
from __future__ import annotations


def pad(seqs: list[dict], pad_id: int) -> dict:
    """Encodings ({"input_ids", optional "token_type_ids"}) → right-padded tensors with an attention mask."""
    import torch

    width = max(len(s["input_ids"]) for s in seqs)
    batch = {
        "input_ids": torch.tensor([s["input_ids"] + [pad_id] * (width - len(s["input_ids"])) for s in seqs]),
        "attention_mask": torch.tensor([[1] * len(s["input_ids"]) + [0] * (width - len(s["input_ids"])) for s in seqs]),
    }
    if "token_type_ids" in seqs[0]:
        batch["token_type_ids"] = torch.tensor([s["token_type_ids"] + [0] * (width - len(s["token_type_ids"])) for s in seqs])
    return batch
