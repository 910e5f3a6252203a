"""What the judge is sent and how its answer is read.

The answer is one JSON object in the message content: the five attributes, each an integer 0–4, and a rationale.
A fenced block, surrounding prose or a reasoning block is tolerated; anything else is unparseable (`None`).
"""
from __future__ import annotations

import json
import re
from typing import Any

from curation.messages import content_text, last_reply_index
from curation.store.judge_tables import ATTRIBUTES

MAX_RATIONALE = 2_000
MAX_OBJECTS = 50  # `{` positions tried in one answer, so a long answer costs little
SCHEMA = {"type": "json_schema", "json_schema": {"name": "judgement", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": [*ATTRIBUTES, "rationale"],
    "properties": {**{a: {"type": "integer", "minimum": 0, "maximum": 4} for a in ATTRIBUTES},
                   "rationale": {"type": "string"}}}}}
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_DECODER = json.JSONDecoder()


def transcript(messages: list[dict], redact: Any, max_chars: int) -> str:
    """The conversation as the judge reads it, up to its last assistant reply; the earliest turns are cut first when
    it is longer than `max_chars`, the reply is always kept. `messages` must have a reply."""
    last = last_reply_index(messages)
    parts = [f"[{m.get('role', 'user')}]\n{redact(content_text(m))}" for m in messages[: last + 1]]
    text = "\n\n".join(parts)
    if len(text) > max_chars:
        text = "[earlier turns cut]\n…" + text[len(text) - max_chars :]
    return "Rate the last assistant reply of this conversation.\n\n<conversation>\n" + text + "\n</conversation>"


def parse(text: str) -> dict | None:
    """{attribute: 0–4, ..., "rationale": str} from an answer, or None when it holds no valid judgement."""
    text = _THINK.sub(" ", text or "")
    candidates = [text.strip(), *(m.group(1) for m in _FENCE.finditer(text))]
    for candidate in candidates:
        found = _valid(_load(candidate))
        if found:
            return found
    for tried, match in enumerate(re.finditer(r"\{", text)):
        if tried >= MAX_OBJECTS:
            break
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except ValueError:
            continue
        found = _valid(value)
        if found:
            return found
    return None


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _valid(value: Any) -> dict | None:
    if not isinstance(value, dict):
        return None
    value = {str(k).strip().lower(): v for k, v in value.items()}
    out: dict[str, Any] = {}
    for name in ATTRIBUTES:
        score = _score(value.get(name))
        if score is None:
            return None
        out[name] = score
    rationale = value.get("rationale")
    out["rationale"] = (rationale if isinstance(rationale, str) else "")[:MAX_RATIONALE]
    return out


def _score(value: Any) -> int | None:
    """An integer 0–4 (3, 3.0 or "3"); anything else, out of range included, is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= 4 else None
