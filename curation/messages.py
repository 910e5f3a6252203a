"""OpenAI chat messages: the one definition of "the text of a message" that every stage uses.

Embedding views, failure detectors, reward-model inputs and annotation tasks all read a message through
`content_text`, so they agree on what a message says. The rule is the one the embedding views have always used, so
stored vectors stay valid.
"""
from __future__ import annotations

from typing import Any


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


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""
