"""How a (context, response) pair becomes the token ids a reward model reads.

With a chat template (instruction-tuned decoder bases) the conversation is rendered by the template itself, and the
response is what the template adds after the generation prompt. Without one (the default MiniLM encoder) we use a
documented plain-text rendering fed as a sentence pair, so the encoder's segment embeddings tell context from response:

    segment A: "User: …\\n\\nAssistant: …\\n\\nUser: …"   (every message before the rated one, "Role: content")
    segment B: the rated assistant message's content

Truncation keeps the most recent context (cut from the left) and the start of the response (cut from the right).
For a training pair the cut is symmetric: chosen and rejected see the same context and the same response budget, so
the model cannot learn "the one with less context wins" or read length off where truncation happened.
"""
from __future__ import annotations

import math
from typing import Any

ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def content_text(message: dict) -> str:
    """The text of an OpenAI chat message; multi-part content is joined, non-text parts dropped."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part, dict))


def plain_context(messages: list[dict]) -> str:
    return "\n\n".join(f"{ROLE_NAMES.get(m.get('role'), str(m.get('role')).title())}: {content_text(m)}" for m in messages)


def length_feature(response: dict) -> float:
    """log(1 + characters) of a response: the length signal the debiasing terms work against."""
    return math.log1p(len(content_text(response)))


class Renderer:
    """Token ids for reward-model inputs. `rendering` is "chat_template" or "plain" (see the module docstring)."""

    def __init__(self, tokenizer: Any, max_length: int = 256, rendering: str | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.rendering = rendering or ("chat_template" if getattr(tokenizer, "chat_template", None) else "plain")
        # Sentence-pair encoders add [CLS] a [SEP] b [SEP]; a chat template carries its own special tokens.
        self.n_special = tokenizer.num_special_tokens_to_add(pair=True) if self.rendering == "plain" else 0
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

    def _cut(self, ctx: list[int], longest_response: int) -> tuple[list[int], int]:
        """The context kept and the response budget, given the longest response that must share them."""
        budget = self.max_length - self.n_special
        response_cap = budget - min(len(ctx), budget // 4)  # the context always keeps up to a quarter of the window
        kept = min(longest_response, response_cap)
        room = budget - kept
        return (ctx[len(ctx) - room:] if room > 0 else []), kept

    def _join(self, ctx: list[int], resp: list[int]) -> dict[str, list[int]]:
        if self.rendering == "chat_template":
            return {"input_ids": ctx + resp}
        tok = self.tokenizer
        out = {"input_ids": tok.build_inputs_with_special_tokens(ctx, resp)}
        if self.uses_token_types:
            out["token_type_ids"] = tok.create_token_type_ids_from_sequences(ctx, resp)
        return out

    def encode(self, prompt: list[dict], response: dict) -> dict[str, list[int]]:
        ctx, resp = self.pieces(prompt, response)
        ctx, kept = self._cut(ctx, len(resp))
        return self._join(ctx, resp[:kept])

    def encode_pair(self, prompt: list[dict], chosen: dict, rejected: dict) -> tuple[dict, dict]:
        ctx, resp_c = self.pieces(prompt, chosen)
        _, resp_r = self.pieces(prompt, rejected)
        ctx, kept = self._cut(ctx, max(len(resp_c), len(resp_r)))
        return self._join(ctx, resp_c[:kept]), self._join(ctx, resp_r[:kept])
