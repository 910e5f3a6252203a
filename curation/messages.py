"""OpenAI chat messages: the one definition of "the text of a message" that every stage uses.

Embedding views, failure detectors, reward-model inputs and annotation tasks all read a message through
`content_text`, so they agree on what a message says. The rule is the one the embedding views have always used, so
stored vectors stay valid.
"""
from __future__ import annotations

import hashlib
from typing import Any

import orjson


def content_text(message: dict) -> str:
    """The text of one message.

    `content` may be a string (returned as is), None ("", e.g. an assistant turn that only calls tools), or a list of
    OpenAI content parts (`[{"type": "text", "text": …}, …]`), whose non-empty texts are joined with a newline;
    parts without text (images, audio) are dropped. A dict (some exports wrap the answer: `{"answer": …}`) gives its
    string values joined the same way.
    """
    content: Any = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text for part in content if isinstance(part, dict) and _is_text(text := part.get("text")))
    if isinstance(content, dict):
        return "\n".join(v for v in content.values() if isinstance(v, str))
    return str(content)


def last_reply_index(messages: list[dict]) -> int | None:
    """Index of the last assistant message (the reply that feedback, detectors, raters and reward models judge),
    or None when there is none."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"), None)


def split_last_reply(messages: list[dict]) -> tuple[list[dict], dict] | None:
    """(context, last assistant message), the unit every stage rates and scores; None without a reply."""
    i = last_reply_index(messages)
    return None if i is None else (messages[:i], messages[i])


def context_id(context: list[dict]) -> str:
    """What replies to the same context share: a short content hash (role and `content_text`) of its messages.

    The one definition of "the same context": the `context_id` column of exports (whose messages already hold plain
    text, so the exported values are the ones exports always wrote), push's pairing of sibling replies, generate's
    candidates and the failure model's cross-validation groups.
    """
    canon = [[m.get("role"), content_text(m)] for m in context]
    return hashlib.sha256(orjson.dumps(canon)).hexdigest()[:16]


def context_key(messages: list[dict]) -> str | None:
    """The `context_id` of a conversation's last reply (every message before it); None without a reply."""
    unit = split_last_reply(messages)
    return None if unit is None else context_id(unit[0])


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""
