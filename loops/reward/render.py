"""How a (context, response) pair becomes the token ids a reward model reads.

With a chat template (instruction-tuned decoder bases) the conversation is rendered by the template itself, and the
response is what the template adds after the generation prompt. Without one (the default MiniLM encoder) we use a
documented plain-text rendering fed as a sentence pair, so the encoder's segment embeddings tell context from response:

    segment A: "User: …\\n\\nAssistant: …\\n\\nUser: …"   (every message before the rated one, "Role: content")
    segment B: the rated assistant message's content

Truncation keeps the tail of the context (cut from the left) and the head of the response (cut from the right). The
context gets at most `context_share` of the window whatever the response's length, so the cut depends on the input
alone: chosen and rejected of a pair see exactly the same context (the model cannot learn "the one with less context
wins"), scoring renders a response exactly as training did, and an input that appears in several pairs is encoded
(and, on a CPU, its frozen layers computed) once.
"""
from __future__ import annotations

import math
from typing import Any

from curation.messages import content_text

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def plain_context(messages: list[dict]) -> str:
    return "\n\n".join(f"{ROLE_NAMES.get(m.get('role'), str(m.get('role')).title())}: {content_text(m)}" for m in messages)


def length_feature(response: dict) -> float:
    """log(1 + characters) of a response: the length signal the debiasing terms work against."""
    return math.log1p(len(content_text(response)))


def pair_frame(tokenizer: Any) -> tuple[tuple[list[int], ...], tuple]:
    """Where the tokenizer puts its special tokens around a sentence pair, read off one encoded pair: the ids before
    segment A, between A and B and after B, and the token type of each part. (transformers 5 tokenizers no longer have
    `build_inputs_with_special_tokens`, which did this for ids; the tokenizer's own pair encoding works on 4 and 5.)"""
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    pair = tokenizer("a", "b")
    ids = pair["input_ids"]
    i = next(k for k in range(len(ids)) if ids[k:k + len(a)] == a)
    j = next(k for k in range(i + len(a), len(ids)) if ids[k:k + len(b)] == b)
    types = pair.get("token_type_ids") or [0] * len(ids)
    parts = (ids[:i], ids[i + len(a):j], ids[j + len(b):])
    return parts, (types[:i], types[i], types[i + len(a):j], types[j], types[j + len(b):])


class Renderer:
    """Token ids for reward-model inputs. `rendering` is "chat_template" or "plain" (see the module docstring)."""

    def __init__(self, tokenizer: Any, max_length: int = 256, rendering: str | None = None, context_share: float = 1 / 3):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.context_share = context_share
        self.rendering = rendering or ("chat_template" if getattr(tokenizer, "chat_template", None) else "plain")
        # Sentence-pair encoders add [CLS] a [SEP] b [SEP]; a chat template carries its own special tokens.
        self.frame = pair_frame(tokenizer) if self.rendering == "plain" else None
        self.n_special = sum(len(part) for part in self.frame[0]) if self.frame else 0
        self.uses_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])

    def pieces(self, prompt: list[dict], response: dict) -> tuple[list[int], list[int]]:
        """Untruncated (context ids, response ids) without special tokens."""
        tok = self.tokenizer
        if self.rendering == "chat_template":
            prefix = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            full = tok.apply_chat_template(prompt + [response], tokenize=False)
            reply = full[len(prefix):] if full.startswith(prefix) else content_text(response)
            return tok(prefix, add_special_tokens=False)["input_ids"], tok(reply, add_special_tokens=False)["input_ids"]
        ctx = tok(plain_context(prompt), add_special_tokens=False)["input_ids"] if prompt else []
        return ctx, tok(content_text(response), add_special_tokens=False)["input_ids"]

    def _cut(self, ctx: list[int], resp: list[int]) -> tuple[list[int], list[int]]:
        """The context tail and response head that fit; the context's share does not depend on the response."""
        budget = self.max_length - self.n_special
        ctx = ctx[max(0, len(ctx) - int(budget * self.context_share)):]
        return ctx, resp[: budget - len(ctx)]

    def _join(self, ctx: list[int], resp: list[int]) -> dict[str, list[int]]:
        if self.rendering == "chat_template":
            return {"input_ids": ctx + resp}
        (before, between, after), (t_before, t_ctx, t_between, t_resp, t_after) = self.frame
        out = {"input_ids": before + ctx + between + resp + after}
        if self.uses_token_types:
            out["token_type_ids"] = t_before + [t_ctx] * len(ctx) + t_between + [t_resp] * len(resp) + t_after
        return out

    def encode(self, prompt: list[dict], response: dict) -> dict[str, list[int]]:
        return self._join(*self._cut(*self.pieces(prompt, response)))

    def encode_many(self, prompts: list[list[dict]], responses: list[dict]) -> list[dict[str, list[int]]]:
        """`encode` of each (prompt, response), the texts tokenised in batches (the same ids, less Python per item)."""
        if self.rendering != "plain":
            return [self.encode(p, r) for p, r in zip(prompts, responses)]
        if not responses:
            return []
        tok = self.tokenizer
        ctx_ids = tok([plain_context(p) for p in prompts], add_special_tokens=False)["input_ids"]  # no context: ""
        resp_ids = tok([content_text(r) for r in responses], add_special_tokens=False)["input_ids"]
        return [self._join(*self._cut(c, r)) for c, r in zip(ctx_ids, resp_ids)]

    def encode_pair(self, prompt: list[dict], chosen: dict, rejected: dict) -> tuple[dict, dict]:
        return self.encode(prompt, chosen), self.encode(prompt, rejected)
