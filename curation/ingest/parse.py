"""Validate one record, or a chunk of raw lines (what ingest's worker processes run), into outcomes."""
from __future__ import annotations

from typing import Any

from curation.ingest.readers import Item, parse_line
from curation.ingest.records import Limits, Reject, chat_record, classify, event_record, sharegpt_record

PARSERS = {"chat": chat_record, "sharegpt": sharegpt_record}
EXPECTED = {"openai": "chat", "sharegpt": "sharegpt"}


def parse_item(item: Item, fmt: str, limits: Limits) -> tuple[str, Any]:
    """("conv", Conversation) | ("event", feedback row) | ("reject", reason) for one record."""
    if item.error:
        return "reject", item.error
    kind = classify(item.obj)
    expected = EXPECTED.get(fmt)
    try:
        if kind == "event":
            return "event", event_record(item.obj)
        if kind in PARSERS and (expected is None or kind == expected):
            return "conv", PARSERS[kind](item.obj, limits)
        raise Reject(_unknown_reason(item.obj, fmt))
    except Reject as exc:
        return "reject", str(exc)


def parse_chunk(path: str, fmt: str, limits: Limits, lines: list[tuple[int, bytes]]) -> list[tuple]:
    """Worker side: raw bytes travel back only for rejected lines, which the quarantine needs."""
    out = []
    for number, raw in lines:
        kind, payload = parse_item(parse_line(path, number, raw), fmt, limits)
        out.append((number, raw if kind == "reject" else None, kind, payload))
    return out



def _unknown_reason(obj: Any, fmt: str) -> str:
    if not isinstance(obj, dict):
        return "record is not a JSON object"
    if fmt == "openai":
        return "missing 'messages'"
    if fmt == "sharegpt":
        return "missing 'conversations'"
    if "resourceSpans" in obj:
        return "an OpenTelemetry trace export (OTLP/JSON): ingest it with --format otel"
    return "unrecognised record: expected 'messages' (OpenAI chat), 'conversations' (ShareGPT), or a feedback event"
