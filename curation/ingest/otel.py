"""OpenTelemetry traces (OTLP/JSON, as the Collector's file exporter writes them) → conversations from GenAI spans.

A line is one export request: `resourceSpans[].scopeSpans[].spans[]`, attributes as `{key, value: {stringValue |
intValue | doubleValue | boolValue | arrayValue | kvlistValue | bytesValue}}`. A span is a GenAI chat span when it
has `gen_ai.*` attributes or events and its `gen_ai.operation.name` is chat, text_completion or generate_content (or
unset). Its messages come from whichever form the instrumentation wrote:
- `gen_ai.input.messages` / `gen_ai.output.messages` (JSON, parts-based; `gen_ai.system_instructions` too);
- the indexed attributes `gen_ai.prompt.{i}.role/content/tool_call_id/tool_calls.{j}.*` and `gen_ai.completion.{i}.*`;
- span events `gen_ai.{system,user,assistant,tool}.message` and `gen_ai.choice` (content in attributes, plain or as
  JSON in `gen_ai.event.content`), or `gen_ai.content.prompt` / `gen_ai.content.completion` with JSON lists.
Each span is one conversation; spans that share `gen_ai.conversation.id` (in every file of one ingest) are merged in
time order into one, each later span adding the messages its context does not share with what came before. The id
is `otel:<trace id>:<span id of the last span>`, so ingesting the same traces again adds nothing.

Counting: a GenAI chat span is one record read (ingested, duplicate, conflict or quarantined with the reason);
other spans are `skipped_spans`, and lines of other signals (`resourceLogs`, `resourceMetrics`) `skipped_records`.
A span that cannot be read (a value of the wrong type, `attributes` that are not a list, a resource that is not an
object, values nested deeper than `MAX_DEPTH`) is quarantined with its reason; the other spans of its line are kept.
Not read: GenAI events exported as log records (resourceLogs), which instrumentations write in their default mode.

One export request at a time (an OTLP receiver): `Reader(limits).read_export(request, source)` gives the
conversations and the rejected spans with their reasons (what OTLP's `partial_success.rejected_spans` counts);
`Reader.finish()` then gives the conversations whose spans share a `gen_ai.conversation.id`. The rules read a span's
`Fields`; `json_fields` decodes them from OTLP/JSON, `curation.collect.otlp` from protobuf (then `Reader.chat_span`).
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import orjson

from curation.errors import InputError
from curation.ingest.genai_messages import event_messages, indexed_messages, parts_messages
from curation.ingest.readers import Item, OnDamage, Source, jsonl_lines
from curation.ingest.records import Conversation, Limits, Reject, check_messages, hash_user, parse_time

CHAT_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
USER_KEYS = ("user.id", "enduser.id", "gen_ai.request.user")
USAGE_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
MAX_DEPTH = 32  # OTLP values (arrays, key/value lists) nested deeper than this make their span unreadable
# (conversations with their file and line, rejected spans with their reasons, spans read)
Found = tuple[list[tuple[Conversation, str, int]], list[tuple[Item, str]], int]
# what reading a malformed span can raise besides Reject: each becomes that span's quarantine reason
UNREADABLE = (TypeError, ValueError, AttributeError, KeyError, RecursionError)


@dataclass(slots=True)
class Fields:
    """What the GenAI rules read from one span, whatever its encoding: OTLP/JSON (`json_fields`) or protobuf
    (`curation.collect.otlp`). Both decoders give the same values for the same span."""

    attrs: dict  # {key: python value}, as `attributes` gives them
    trace_id: str
    span_id: str
    start: int
    end: int
    events: list[tuple[Any, dict]]  # (name, attributes)
    status_code: Any  # 2 / "STATUS_CODE_ERROR" is an error
    status_message: Any


@dataclass(slots=True)
class Span:
    """A GenAI chat span, read: where it came from and what it says."""

    number: int  # unique in this ingest: what the store counts as the record's line
    source: str
    line: int
    raw: Callable[[], bytes]  # the span's text, for the quarantine (built only for a span that is rejected)
    trace_id: str
    span_id: str
    start: int
    end: int
    service: str | None
    attrs: dict
    prompt: list[dict] = field(default_factory=list)
    completion: list[dict] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)

    def item(self) -> Item:
        return Item(self.source, self.line, self.raw())


class Reader:
    """Reads OTLP/JSON trace files; `conversations()` yields batches as oasst.conversations does."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.skipped_spans = 0
        self.skipped_records = 0
        self._numbers = 0
        self._groups: dict[str, list[Span]] = {}

    def conversations(self, sources: list[Source], on_bytes: Callable[[int], None] | None,
                      damaged: Callable[[str], OnDamage]) -> Iterator[Found]:
        for source in sources:
            if source.kind != "jsonl":
                raise InputError(f"{source.path}: --format otel reads OTLP/JSON files (.json, .jsonl, plain or .gz)")
            for number, raw in jsonl_lines(source.path, on_bytes, damaged(source.path)):
                yield self._line(source.path, number, raw)
        yield from self.finish()

    def finish(self) -> Iterator[Found]:
        """The conversations of spans that share a `gen_ai.conversation.id`, once every export is read."""
        groups, self._groups = self._groups, {}
        for group in groups.values():
            yield self._conversation(sorted(group, key=lambda s: (s.start, s.number)))

    def _line(self, path: str, number: int, raw: bytes) -> Found:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return [], [(Item(path, number, raw), f"malformed JSON: {str(exc).splitlines()[0][:120]}")], 1
        if not isinstance(obj, dict) or not isinstance(obj.get("resourceSpans"), list):
            if isinstance(obj, dict) and ("resourceLogs" in obj or "resourceMetrics" in obj):
                self.skipped_records += 1
                return [], [], 0
            return [], [(Item(path, number, raw), "not an OTLP/JSON trace export: expected 'resourceSpans'")], 1
        return self.read_export(obj, path, number, raw)

    def read_export(self, request: dict, source: str, number: int = 0, raw: bytes = b"") -> Found:
        """One OTLP/JSON export request (`{"resourceSpans": [...]}`): its conversations, and each GenAI span that
        cannot be read with its reason. One bad span never stops the others. `raw` (the request's text) is what the
        quarantine keeps for a span too deep to encode again."""
        found: list[tuple[Conversation, str, int]] = []
        rejected: list[tuple[Item, str]] = []
        read = 0
        for resource in request.get("resourceSpans") or ():
            resource = resource if isinstance(resource, dict) else {}
            try:
                about = resource.get("resource")
                if about is not None and not isinstance(about, dict):
                    raise Reject(f"'resource' must be an object, not {_kind(about)}")
                service, trouble = attributes((about or {}).get("attributes")).get("service.name"), None
            except (Reject, *UNREADABLE) as exc:
                service, trouble = None, f"its resource cannot be read: {_why(exc)}"
            for scope in resource.get("scopeSpans") or ():
                for span in (scope.get("spans") if isinstance(scope, dict) else None) or ():
                    convs, bad, n = self._span(span, source, number, raw, service, trouble)
                    found += convs
                    rejected += bad
                    read += n
        return found, rejected, read

    def _span(self, span: Any, source: str, number: int, raw: bytes, service: str | None,
              trouble: str | None) -> Found:
        try:
            fields = json_fields(span)
            chat = fields is not None
        except (Reject, *UNREADABLE) as exc:
            fields, chat, trouble = None, _mentions_genai(span), trouble or _why(exc)
        if not chat:
            self.skipped_spans += 1
            return [], [], 0

        def text() -> bytes:
            try:
                return orjson.dumps(span)
            except orjson.JSONEncodeError:  # nested past orjson's limit: keep the whole request's text
                return raw

        shown = _hex(span.get("spanId")) if isinstance(span, dict) else ""
        return self.chat_span(fields, trouble, source, number, text, service, shown)

    def chat_span(self, fields: Fields | None, trouble: str | None, source: str, number: int,
                  raw: Callable[[], bytes], service: str | None, shown: str) -> Found:
        """One GenAI chat span, decoded (`fields`), or with the `trouble` that kept it from being decoded: its
        conversation now, or later (`finish`) when it shares a `gen_ai.conversation.id`; or its rejection."""
        self._numbers += 1
        try:
            if trouble is not None:
                raise Reject(trouble)
            parsed = _read_span(fields, Span(self._numbers, source, number, raw, fields.trace_id, fields.span_id,
                                             fields.start, fields.end, service, fields.attrs))
        except (Reject, *UNREADABLE) as exc:
            return [], [(Item(source, number, raw()), f"span {shown}: {_why(exc)}")], 1
        conv_id = parsed.attrs.get("gen_ai.conversation.id")
        if conv_id is not None:
            self._groups.setdefault(str(conv_id), []).append(parsed)
            return [], [], 1
        convs, bad, _ = self._conversation([parsed])
        return convs, bad, 1

    def _conversation(self, spans: list[Span]) -> Found:
        last = spans[-1]
        messages: list[dict] = []
        for span in spans:
            messages += span.prompt[_shared(messages, span.prompt):] + span.completion
        try:
            messages = check_messages(messages, self.limits)
            encoded = orjson.dumps(messages).decode()
        except (Reject, orjson.JSONEncodeError) as exc:
            which = "span" if len(spans) == 1 else f"conversation {last.attrs.get('gen_ai.conversation.id')!r}, span"
            return [], [(s.item(), f"{which} {s.span_id}: {exc}") for s in spans], 0
        attrs = last.attrs
        usage = {k: sum(s.attrs.get(f"gen_ai.usage.{k}") or 0 for s in spans) for k in ("input_tokens", "output_tokens")}
        metadata = {
            "source_format": "otel",
            "trace_ids": sorted({s.trace_id for s in spans}),
            "span_ids": [s.span_id for s in spans],
            "provider": attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system"),
            "service": last.service,
            "request_model": attrs.get("gen_ai.request.model"),
            "response_id": attrs.get("gen_ai.response.id"),
            "finish_reasons": last.finish_reasons or None,
            "usage": {k: v for k, v in usage.items() if v} or None,
            "latency_ms": round((last.end - last.start) / 1e6, 3) if last.end and last.start else None,
        }
        user = next((s.attrs[k] for s in spans for k in USER_KEYS if s.attrs.get(k) is not None), None)
        conv_id = f"otel:{last.trace_id}:{last.span_id}"
        row = (  # CONVERSATION_COLUMNS
            conv_id,
            encoded,
            attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model"),
            parse_time(spans[0].start / 1e9, "startTimeUnixNano") if spans[0].start else None,
            None if attrs.get("gen_ai.conversation.id") is None else str(attrs["gen_ai.conversation.id"])[:200],
            hash_user(user, self.limits.salt),
            orjson.dumps({k: v for k, v in metadata.items() if v is not None}).decode(),
            len(messages),
        )
        return [(Conversation(row, [], tuple(s.number for s in spans)), spans[0].source, last.line)], [], 0


def json_fields(span: Any) -> Fields | None:
    """An OTLP/JSON GenAI chat span's fields, None for any other span; raises Reject, or what UNREADABLE names, for
    one that cannot be read. Each attribute list is read once."""
    if not isinstance(span, dict):
        return None
    for name in ("attributes", "events"):
        if span.get(name) is not None and not isinstance(span[name], list):
            raise Reject(f"'{name}' must be a list, not {_kind(span[name])}")
    attrs = attributes(span.get("attributes"))
    events = [e for e in span.get("events") or () if isinstance(e, dict)]
    if not is_chat(attrs, [e.get("name") for e in events]):
        return None
    events = [(e.get("name"), attributes(e.get("attributes"))) for e in events]
    try:
        start, end = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
    except (TypeError, ValueError):
        raise Reject(f"bad startTimeUnixNano/endTimeUnixNano {str(span.get('startTimeUnixNano'))[:40]!r}") from None
    status = span.get("status") if isinstance(span.get("status"), dict) else {}
    return Fields(attrs, _hex(span.get("traceId")), _hex(span.get("spanId")), start, end, events,
                  status.get("code"), status.get("message"))


def is_chat(attrs: dict, event_names: list) -> bool:
    """A GenAI chat span: `gen_ai.*` attributes or events, and a chat operation (or none named)."""
    if not (any(k.startswith("gen_ai.") for k in attrs)
            or any(isinstance(name, str) and name.startswith("gen_ai.") for name in event_names)):
        return False
    operation = attrs.get("gen_ai.operation.name")
    return operation is None or operation in CHAT_OPERATIONS


def _mentions_genai(span: Any) -> bool:
    """Whether a span that cannot be read may be a GenAI span (then it is quarantined, not skipped)."""
    if not isinstance(span, dict):
        return False
    if not all(isinstance(span.get(name), (list, type(None))) for name in ("attributes", "events")):
        return True
    names = [a.get("key") for a in span.get("attributes") or () if isinstance(a, dict)]
    names += [e.get("name") for e in span.get("events") or () if isinstance(e, dict)]
    return any(isinstance(k, str) and k.startswith("gen_ai.") for k in names)


def _read_span(fields: Fields, parsed: Span) -> Span:
    """The GenAI rules: a span's messages, finish reasons and token counts; raises Reject with the reason."""
    attrs = parsed.attrs
    for key in USAGE_KEYS:  # token counts are summed over a conversation: whole numbers, or left out
        if attrs.get(key) is not None:
            attrs[key] = _count(attrs[key], key)
    if not parsed.span_id:
        raise Reject("span without a spanId")
    events = fields.events
    parsed.prompt = (parts_messages(attrs.get("gen_ai.input.messages"), "gen_ai.input.messages")
                     or indexed_messages(attrs, "prompt") or event_messages(events, prompt=True))
    instructions = parts_messages(attrs.get("gen_ai.system_instructions"), "gen_ai.system_instructions", "system")
    if instructions and not any(m["role"] == "system" for m in parsed.prompt):
        parsed.prompt = [{"role": "system", "content": "\n".join(m["content"] or "" for m in instructions)}, *parsed.prompt]
    parsed.completion = (parts_messages(attrs.get("gen_ai.output.messages"), "gen_ai.output.messages")
                         or indexed_messages(attrs, "completion") or event_messages(events, prompt=False))
    reasons = attrs.get("gen_ai.response.finish_reasons")
    parsed.finish_reasons = [str(r) for r in reasons] if isinstance(reasons, list) else []
    if not parsed.prompt and not parsed.completion:
        raise Reject("GenAI span without prompt or completion content: the instrumentation did not record messages "
                     "(turn content capture on, e.g. OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)")
    if not parsed.completion:
        if fields.status_code in (2, "STATUS_CODE_ERROR"):
            message = str(fields.status_message or "")[:200]
            raise Reject(f"the call failed (span status error: {message}), no completion")
        raise Reject("GenAI span with a prompt but no completion")
    return parsed


def attributes(items: Any, depth: int = 0) -> dict:
    """OTLP key/value list → {key: python value}; raises Reject naming the key of a value that cannot be read."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise Reject(f"attributes must be a list of {{key, value}}, not {_kind(items)}")
    out = {}
    for entry in items:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            try:
                out[entry["key"]] = any_value(entry.get("value"), depth)
            except Reject as exc:
                raise Reject(f"attribute {entry['key'][:100]!r}: {exc}") from None
    return out


def any_value(value: Any, depth: int = 0) -> Any:
    """An OTLP AnyValue as a Python value; raises Reject for one that breaks the OTLP/JSON mapping."""
    if not isinstance(value, dict) or not value:
        return None
    if depth > MAX_DEPTH:
        raise Reject(f"values nested deeper than {MAX_DEPTH} levels")
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        if isinstance(inner, bool) or not isinstance(inner, (int, str)):
            raise Reject(f"intValue {_shown(inner)} is not an integer")
        try:
            return int(inner)
        except ValueError:
            raise Reject(f"intValue {_shown(inner)} is not an integer") from None
    if kind == "doubleValue":
        if isinstance(inner, bool) or not isinstance(inner, (int, float, str)):
            raise Reject(f"doubleValue {_shown(inner)} is not a number")
        try:
            return float(inner)
        except ValueError:
            raise Reject(f"doubleValue {_shown(inner)} is not a number") from None
    if kind in ("arrayValue", "kvlistValue"):
        if inner is not None and not isinstance(inner, dict):
            raise Reject(f"{kind} must be an object with 'values', not {_kind(inner)}")
        values = (inner or {}).get("values")
        if kind == "kvlistValue":
            return attributes(values, depth + 1)
        if values is not None and not isinstance(values, list):
            raise Reject(f"arrayValue 'values' must be a list, not {_kind(values)}")
        return [any_value(v, depth + 1) for v in values or ()]
    return inner  # stringValue, boolValue; bytesValue stays base64 text


def _count(value: Any, key: str) -> int:
    """A token count: an integer, or an integer written as a string (as some instrumentations do)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise Reject(f"{key} is {_shown(value)}, not a count of tokens")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value)[:60]


def _why(exc: BaseException) -> str:
    """The quarantine reason for what reading a span raised."""
    if isinstance(exc, Reject):
        return str(exc)
    return f"the span cannot be read ({type(exc).__name__}: {str(exc)[:160]})"


def _hex(value: Any) -> str:
    """Trace and span ids: hex in OTLP/JSON; protobuf's generic JSON mapping writes them base64."""
    if not isinstance(value, str) or not value:
        return ""
    if re.fullmatch(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}", value):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value[:64]


def _shared(history: list[dict], prompt: list[dict]) -> int:
    """How many of `prompt`'s first messages are the conversation so far (a call resends its history); a system
    prompt that this call does not repeat is passed over. Those messages are not added again."""
    start = 0
    if prompt and prompt[0].get("role") != "system":
        while start < len(history) and history[start].get("role") == "system":
            start += 1
    n = 0
    for old, new in zip(history[start:], prompt):
        if (old.get("role"), old.get("content")) != (new.get("role"), new.get("content")):
            break
        n += 1
    return n
