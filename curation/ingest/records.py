"""Turn one raw record into a conversation row and its feedback rows, or reject it with a reason.

A rejection is a `Reject` exception whose message is the reason written to the quarantine. Validation is strict
about what later stages rely on (roles, string content, an assistant turn, timestamps) and lenient about the rest.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
FEEDBACK_TYPES = frozenset(
    {"thumbs_down", "thumbs_up", "rating", "comment", "flag", "regenerated", "edited", "abandoned"}
)
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system", "tool": "tool",
                  "function": "tool", "function_call": "assistant", "observation": "tool"}
MAX_ID = 200


class Reject(ValueError):
    """The record cannot be ingested; the message is the quarantine reason."""


@dataclass
class Limits:
    max_messages: int = 1_000
    max_chars: int = 500_000
    salt: str = "curate"


# Rows are plain tuples in these column orders: the ingest hot path hands them to the driver as they are.
CONVERSATION_COLUMNS = ("id", "messages", "model", "created_at", "session_id", "user_hash", "metadata", "n_messages")
FEEDBACK_COLUMNS = ("id", "conversation_id", "type", "value", "turn", "at")


@dataclass(slots=True)
class Conversation:
    row: tuple  # values in CONVERSATION_COLUMNS order
    feedback: list[tuple] = field(default_factory=list)  # rows in FEEDBACK_COLUMNS order
    lines: tuple[int, ...] = ()  # source lines it accounts for (several for an oasst thread)

    @property
    def id(self) -> str:
        return self.row[0]


def content_hash(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def hash_user(user_id: Any, salt: str) -> str | None:
    if user_id is None:
        return None
    return _salted_hash(str(user_id), salt)


@functools.lru_cache(maxsize=1 << 16)  # the same users come back again and again in production traffic
def _salted_hash(user_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}\x00{user_id}".encode()).hexdigest()[:32]


# Most logs write UTC like this already: its store text is the same characters with the fraction padded.
_UTC_TEXT = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]{6})?(?:Z|\+00:00)")


def parse_time(value: Any, what: str) -> str | None:
    """ISO-8601 text (naive = UTC) or epoch seconds → the store's UTC text; anything else is rejected."""
    if value is None:
        return None
    if type(value) is str and (utc := _UTC_TEXT.fullmatch(value)) is not None:
        try:
            dt.datetime.fromisoformat(value)  # checks the ranges: month 13 or 30 February are still rejected
            return f"{utc[1]}{utc[2] or '.000000'}Z"
        except ValueError:
            pass  # the general path below words the rejection
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, (int, float)):
            if not 0 <= value < 32503680000:  # up to year 3000
                raise ValueError
            moment = dt.datetime.fromtimestamp(value, dt.timezone.utc)
        elif isinstance(value, str):
            moment = dt.datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
            moment = moment.astimezone(dt.timezone.utc)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError, OSError):
        raise Reject(f"bad timestamp in '{what}': {str(value)[:60]!r} (use ISO 8601 or epoch seconds)") from None
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond
    )


def _ident(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if type(value) is str and 0 < len(value) <= MAX_ID:
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Reject(f"'{what}' must be a string")
    text = str(value)
    if not text or len(text) > MAX_ID:
        raise Reject(f"'{what}' must be 1–{MAX_ID} characters")
    return text


def check_messages(messages: Any, limits: Limits) -> list[dict]:
    if messages is None:
        raise Reject("missing 'messages'")
    if not isinstance(messages, list):
        raise Reject("'messages' must be a list of {role, content} objects")
    if not messages:
        raise Reject("'messages' is empty")
    if len(messages) > limits.max_messages:
        raise Reject(f"conversation has {len(messages)} messages, over the limit of {limits.max_messages} (ingest.max_messages)")
    chars = 0
    has_assistant = False
    for msg in messages:
        # the common case costs two dict lookups and three type checks; _explain_bad_message words a rejection
        if type(msg) is not dict:
            _explain_bad_message(messages)
        role = msg.get("role")
        if type(role) is not str or role not in ROLES:  # a list or dict role is unhashable: check the type first
            _explain_bad_message(messages)
        content = msg.get("content")
        if type(content) is str:
            chars += len(content)
        elif not (content is None and role == "assistant" and msg.get("tool_calls")):
            _explain_bad_message(messages)
        if role == "assistant":
            has_assistant = True
    if not has_assistant:
        raise Reject("no assistant turn: a conversation needs at least one assistant message")
    if chars > limits.max_chars:
        raise Reject(f"conversation has {chars} characters, over the limit of {limits.max_chars} (ingest.max_chars)")
    return messages


def _explain_bad_message(messages: list) -> None:
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise Reject(f"message {i} is not an object")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise Reject(f"message {i} has unknown role {str(role)[:40]!r} (expected system, user, assistant or tool)")
        content = msg.get("content")
        if not isinstance(content, str) and not (content is None and role == "assistant" and msg.get("tool_calls")):
            raise Reject(f"message {i} content must be a string, not {type(content).__name__}")


def check_event(event: Any, messages: list[dict] | None, where: str) -> tuple[str, Any, int | None, str | None]:
    """Validate one feedback event; returns (type, value, turn, at)."""
    if not isinstance(event, dict):
        raise Reject(f"{where} is not an object")
    kind = event.get("type")
    if not isinstance(kind, str) or kind not in FEEDBACK_TYPES:
        raise Reject(f"{where} has unknown type {str(kind)[:40]!r} (expected one of {', '.join(sorted(FEEDBACK_TYPES))})")
    value = event.get("value")
    if kind == "rating" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 5):
        raise Reject(f"{where}: a rating needs a numeric value from 1 to 5")
    if kind == "comment" and not isinstance(value, str):
        raise Reject(f"{where}: a comment needs a string value")
    turn = event.get("turn")
    if turn is not None:
        if isinstance(turn, bool) or not isinstance(turn, int):
            raise Reject(f"{where}: 'turn' must be the index of an assistant message")
        if messages is not None and not (0 <= turn < len(messages) and messages[turn].get("role") == "assistant"):
            raise Reject(f"{where}: 'turn' {turn} is not the index of an assistant message")
    return kind, value, turn, parse_time(event.get("at"), f"{where}.at")


def feedback_row(conversation_id: str, kind: str, value: Any, turn: int | None, at: str | None, key: Any) -> tuple:
    """A feedback row (FEEDBACK_COLUMNS); its id is a content hash, so ingesting it again adds nothing."""
    return (
        content_hash(conversation_id, key, kind, value, turn, at),
        conversation_id,
        kind,
        None if value is None else orjson.dumps(value).decode(),
        turn,
        at,
    )


def chat_record(obj: dict, limits: Limits, messages: list | None = None) -> Conversation:
    """An OpenAI-style record (`messages`), or any record whose messages were already converted."""
    messages = check_messages(obj.get("messages") if messages is None else messages, limits)
    conv_id = _ident(obj.get("id"), "id") or content_hash(messages)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise Reject("'metadata' must be an object")
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise Reject("'model' must be a string")
    row = (
        conv_id,
        orjson.dumps(messages).decode(),
        model,
        parse_time(obj.get("created_at"), "created_at"),
        _ident(obj.get("session_id"), "session_id"),
        hash_user(_ident(obj.get("user_id"), "user_id"), limits.salt),
        None if metadata is None else orjson.dumps(metadata).decode(),
        len(messages),
    )
    events = obj.get("feedback") or []
    if not isinstance(events, list):
        raise Reject("'feedback' must be a list of events")
    feedback = []
    for i, event in enumerate(events):
        kind, value, turn, at = check_event(event, messages, f"feedback[{i}]")
        feedback.append(feedback_row(conv_id, kind, value, turn, at, ("record", i)))
    return Conversation(row, feedback)


def sharegpt_record(obj: dict, limits: Limits) -> Conversation:
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise Reject("'conversations' must be a non-empty list of {from, value}")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise Reject(f"conversations[{i}] is not an object")
        role = SHAREGPT_ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise Reject(f"conversations[{i}] has unknown speaker {str(turn.get('from'))[:40]!r} (expected human or gpt)")
        messages.append({"role": role, "content": turn.get("value")})
    if obj.get("system") and isinstance(obj["system"], str):
        messages.insert(0, {"role": "system", "content": obj["system"]})
    return chat_record(obj, limits, messages)


def event_record(obj: dict) -> tuple:
    """A standalone feedback event: `{"conversation_id", "type", "value"?, "turn"?, "at"?}`."""
    conv_id = _ident(obj.get("conversation_id"), "conversation_id")
    if conv_id is None:
        raise Reject("a feedback event needs 'conversation_id'")
    kind, value, turn, at = check_event(obj, None, "event")
    return feedback_row(conv_id, kind, value, turn, at, obj.get("id", "event"))


def classify(obj: Any) -> str:
    """Which record shape this is: chat, sharegpt, event, oasst, or unknown."""
    if not isinstance(obj, dict):
        return "unknown"
    if "messages" in obj:
        return "chat"
    if "conversations" in obj:
        return "sharegpt"
    if "message_id" in obj and "message_tree_id" in obj:
        return "oasst"
    if "conversation_id" in obj and "type" in obj:
        return "event"
    return "unknown"
