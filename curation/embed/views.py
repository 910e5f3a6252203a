"""Views: what text of a conversation gets embedded.

A view is any callable `messages -> str` (OpenAI chat messages in) with a `name`; the name is part of the embedding
space, so changing the view re-embeds. The budgets are in characters, not tokens, because tokenizing just to
truncate would cost as much as a good part of the embedding itself: all-MiniLM-L6-v2 reads 256 word pieces, about
1,000 characters of English, so the budgets below keep both the request and the start of the reply inside the
window instead of letting a long pasted prompt push the reply out of it.
"""
from __future__ import annotations

from typing import Callable, Protocol

from curation.errors import ConfigError
from curation.messages import content_text, last_reply_index

USER_CHARS = 500
REPLY_CHARS = 700
THREAD_MESSAGE_CHARS = 300
THREAD_CHARS = 1_500


class View(Protocol):
    name: str

    def __call__(self, messages: list[dict]) -> str: ...


def clip(text: str, limit: int) -> str:
    """The first `limit` characters, cut at the last word boundary when one is near."""
    text = " ".join(text.split())  # runs of whitespace (code indentation) use up the budget but make no tokens
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", limit - 40, limit)
    return text[: cut if cut > 0 else limit]


def last_turn(messages: list[dict]) -> str:
    """The last user message and the assistant reply after it: what was asked and what was answered."""
    reply_at = last_reply_index(messages)
    before = messages if reply_at is None else messages[:reply_at]
    user = next((content_text(m) for m in reversed(before) if m.get("role") == "user"), "")
    reply = "" if reply_at is None else content_text(messages[reply_at])
    parts = [clip(user, USER_CHARS), clip(reply, REPLY_CHARS)]
    text = "\n".join(p for p in parts if p)
    return text or thread(messages)


last_turn.name = "last_turn"  # type: ignore[attr-defined]


def request(messages: list[dict]) -> str:
    """The last user message before the reply alone: what people ask, whatever the model answered."""
    reply_at = last_reply_index(messages)
    before = messages if reply_at is None else messages[:reply_at]
    user = next((content_text(m) for m in reversed(before) if m.get("role") == "user"), "")
    return clip(user, USER_CHARS + REPLY_CHARS) or thread(messages)


request.name = "request"  # type: ignore[attr-defined]


def thread(messages: list[dict]) -> str:
    """Every user and assistant message in order, each clipped, the whole clipped from the start."""
    parts = [clip(content_text(m), THREAD_MESSAGE_CHARS) for m in messages if m.get("role") in ("user", "assistant")]
    text = "\n".join(p for p in parts if p)
    if not text:  # only system or tool messages: embed whatever text there is
        text = "\n".join(clip(content_text(m), THREAD_MESSAGE_CHARS) for m in messages)
    return clip(text, THREAD_CHARS)


thread.name = "thread"  # type: ignore[attr-defined]

VIEWS: dict[str, Callable[[list[dict]], str]] = {"request": request, "last_turn": last_turn, "thread": thread}


DEFAULT_VIEW = "thread"  # benchmarks/cluster_quality.py: the best NMI on both labelled sets and on their average


def get_view(view: str | View | None) -> View:
    """A view by name (`thread`, the default, `last_turn` or `request`), or a callable with a `name` passed through."""
    if view is None:
        view = DEFAULT_VIEW
    if callable(view):
        if not getattr(view, "name", None):
            raise ConfigError("a custom view needs a `name` attribute: it names the embedding space")
        return view
    try:
        return VIEWS[view]  # type: ignore[return-value]
    except KeyError:
        raise ConfigError(f"unknown view {view!r}; choose one of: {', '.join(VIEWS)}") from None
