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

Counting: a GenAI chat span is one record read (ingested, duplicate or quarantined with the reason); other spans are
`skipped_spans`, and lines of other signals (`resourceLogs`, `resourceMetrics`) `skipped_records`.
Not read: GenAI events exported as log records (resourceLogs), which instrumentations write in their default mode.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import orjson

from curation.errors import InputError
from curation.ingest.readers import Item, OnDamage, Source, jsonl_lines
from curation.ingest.records import Conversation, Limits, Reject, check_messages, hash_user, parse_time

CHAT_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
EVENT_ROLES = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
               "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
INDEXED = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")
USER_KEYS = ("user.id", "enduser.id", "gen_ai.request.user")
Found = tuple[list[tuple[Conversation, str]], list[tuple[Item, str]], int]  # (conversations and their file, rejected, read)


@dataclass
class Span:
    """A GenAI chat span, read: where it came from and what it says."""

    number: int  # unique in this ingest: what the store counts as the record's line
    item: Item
    trace_id: str
    span_id: str
    start: int
    end: int
    service: str | None
    attrs: dict
    prompt: list[dict] = field(default_factory=list)
    completion: list[dict] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)


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
        yield from self.merged()  # conversation ids: merged once every file is read

    def merged(self) -> Iterator[Found]:
        """The conversations of the spans read so far that carry `gen_ai.conversation.id`, each group merged; the
        groups are then forgotten (`curate collect` calls this after each request)."""
        groups, self._groups = self._groups, {}
        for group in groups.values():
            yield self._conversation(sorted(group, key=lambda s: (s.start, s.number)))

    def _line(self, path: str, number: int, raw: bytes) -> Found:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return [], [(Item(path, number, raw), f"malformed JSON: {str(exc).splitlines()[0][:120]}")], 1
        return self.export(obj, path, number, raw)

    def export(self, obj: Any, path: str, number: int, raw: bytes = b"") -> Found:
        """One export request, parsed from OTLP/JSON (`raw` is its text, for the quarantine); spans with a
        conversation id wait for `merged`."""
        if not isinstance(obj, dict) or not isinstance(obj.get("resourceSpans"), list):
            if isinstance(obj, dict) and ("resourceLogs" in obj or "resourceMetrics" in obj):
                self.skipped_records += 1
                return [], [], 0
            return [], [(Item(path, number, raw), "not an OTLP/JSON trace export: expected 'resourceSpans'")], 1
        found: list[tuple[Conversation, str]] = []
        rejected: list[tuple[Item, str]] = []
        read = 0
        for resource in obj["resourceSpans"]:
            resource = resource if isinstance(resource, dict) else {}
            service = attributes((resource.get("resource") or {}).get("attributes")).get("service.name")
            for scope in resource.get("scopeSpans") or ():
                for span in (scope.get("spans") if isinstance(scope, dict) else None) or ():
                    if not _is_chat(span):
                        self.skipped_spans += 1
                        continue
                    read += 1
                    self._numbers += 1
                    item = Item(path, number, orjson.dumps(span))
                    try:
                        parsed = _read_span(span, item, self._numbers, service)
                    except Reject as exc:
                        rejected.append((item, f"span {_hex((span or {}).get('spanId'))}: {exc}"))
                        continue
                    conv_id = parsed.attrs.get("gen_ai.conversation.id")
                    if conv_id is not None:
                        self._groups.setdefault(str(conv_id), []).append(parsed)
                        continue
                    convs, bad, _ = self._conversation([parsed])
                    found += convs
                    rejected += bad
        return found, rejected, read

    def _conversation(self, spans: list[Span]) -> Found:
        last = spans[-1]
        messages: list[dict] = []
        for span in spans:
            messages += span.prompt[_shared(messages, span.prompt):] + span.completion
        try:
            messages = check_messages(messages, self.limits)
        except Reject as exc:
            which = "span" if len(spans) == 1 else f"conversation {last.attrs.get('gen_ai.conversation.id')!r}, span"
            return [], [(s.item, f"{which} {s.span_id}: {exc}") for s in spans], 0
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
            orjson.dumps(messages).decode(),
            attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model"),
            parse_time(spans[0].start / 1e9, "startTimeUnixNano") if spans[0].start else None,
            None if attrs.get("gen_ai.conversation.id") is None else str(attrs["gen_ai.conversation.id"])[:200],
            hash_user(user, self.limits.salt),
            orjson.dumps({k: v for k, v in metadata.items() if v is not None}).decode(),
            len(messages),
        )
        return [(Conversation(row, [], tuple(s.number for s in spans)), spans[0].item.source)], [], 0


def _is_chat(span: Any) -> bool:
    if not isinstance(span, dict):
        return False
    keys = [a.get("key") for a in span.get("attributes") or () if isinstance(a, dict)]
    names = [e.get("name") for e in span.get("events") or () if isinstance(e, dict)]
    if not any(isinstance(k, str) and k.startswith("gen_ai.") for k in keys + names):
        return False
    operation = attributes(span.get("attributes")).get("gen_ai.operation.name")
    return operation is None or operation in CHAT_OPERATIONS


def _read_span(span: dict, item: Item, number: int, service: str | None) -> Span:
    attrs = attributes(span.get("attributes"))
    try:
        start, end = int(span.get("startTimeUnixNano") or 0), int(span.get("endTimeUnixNano") or 0)
    except (TypeError, ValueError):
        raise Reject(f"bad startTimeUnixNano/endTimeUnixNano {str(span.get('startTimeUnixNano'))[:40]!r}") from None
    parsed = Span(number, item, _hex(span.get("traceId")), _hex(span.get("spanId")), start, end, service, attrs)
    if not parsed.span_id:
        raise Reject("span without a spanId")
    events = [(e.get("name"), attributes(e.get("attributes"))) for e in span.get("events") or () if isinstance(e, dict)]
    parsed.prompt = (_parts_messages(attrs.get("gen_ai.input.messages"), "gen_ai.input.messages")
                     or _indexed(attrs, "prompt") or _event_messages(events, prompt=True))
    instructions = _parts_messages(attrs.get("gen_ai.system_instructions"), "gen_ai.system_instructions", "system")
    if instructions and not any(m["role"] == "system" for m in parsed.prompt):
        parsed.prompt = [{"role": "system", "content": "\n".join(m["content"] or "" for m in instructions)}, *parsed.prompt]
    parsed.completion = (_parts_messages(attrs.get("gen_ai.output.messages"), "gen_ai.output.messages")
                         or _indexed(attrs, "completion") or _event_messages(events, prompt=False))
    reasons = attrs.get("gen_ai.response.finish_reasons")
    parsed.finish_reasons = [str(r) for r in reasons] if isinstance(reasons, list) else []
    if not parsed.prompt and not parsed.completion:
        raise Reject("GenAI span without prompt or completion content: the instrumentation did not record messages "
                     "(turn content capture on, e.g. OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)")
    if not parsed.completion:
        status = span.get("status") if isinstance(span.get("status"), dict) else {}
        if status.get("code") in (2, "STATUS_CODE_ERROR"):
            raise Reject(f"the call failed (span status error: {str(status.get('message') or '')[:200]}), no completion")
        raise Reject("GenAI span with a prompt but no completion")
    return parsed


def attributes(items: Any) -> dict:
    """OTLP key/value list → {key: python value}."""
    out = {}
    for entry in items or ():
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            out[entry["key"]] = any_value(entry.get("value"))
    return out


def any_value(value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [any_value(v) for v in (inner or {}).get("values") or ()]
    if kind == "kvlistValue":
        return attributes((inner or {}).get("values"))
    return inner  # stringValue, boolValue; bytesValue stays base64 text


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


def _json(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Reject(f"'{what}' is not valid JSON") from None
    return value


def _parts_messages(value: Any, what: str, role: str | None = None) -> list[dict]:
    """The parts-based messages of the GenAI conventions (`[{role, parts: [{type, ...}], finish_reason?}]`)."""
    if value is None:
        return []
    value = _json(value, what)
    if role is not None:  # system instructions: a list of parts, not of messages
        value = [{"role": role, "parts": value if isinstance(value, list) else [value]}]
    if not isinstance(value, list):
        raise Reject(f"'{what}' must be a list of messages")
    out = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("parts", []), list):
            raise Reject(f"'{what}' has a message that is not {{role, parts}}")
        texts, calls = [], []
        for part in message.get("parts") or ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("content") or ""))
            elif kind == "tool_call":
                arguments = part.get("arguments")
                calls.append({"id": part.get("id"), "type": "function", "function": {
                    "name": part.get("name"),
                    "arguments": arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()}})
            elif kind == "tool_call_response":
                response = part.get("response", part.get("result"))
                out.append({"role": "tool", "tool_call_id": part.get("id"),
                            "content": response if isinstance(response, str) else orjson.dumps(response).decode()})
            elif kind not in ("reasoning", None):
                texts.append(f"[{kind}]")
        if texts or calls:
            msg: dict = {"role": message.get("role"), "content": "\n".join(texts) if texts else None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    return out


def _indexed(attrs: dict, kind: str) -> list[dict]:
    """`gen_ai.prompt.{i}.role` / `.content` / `.tool_call_id` / `.tool_calls.{j}.{id,name,arguments}`."""
    by_index: dict[int, dict] = {}
    for key, value in attrs.items():
        match = INDEXED.fullmatch(key)
        if match is None or match[1] != kind:
            continue
        msg = by_index.setdefault(int(match[2]), {})
        field_name = match[3]
        if field_name.startswith("tool_calls."):
            _, j, name = (field_name.split(".", 2) + [""])[:3]
            msg.setdefault("_calls", {}).setdefault(int(j) if j.isdigit() else 0, {})[name] = value
        else:
            msg[field_name] = value
    out = []
    for _, msg in sorted(by_index.items()):
        calls = msg.pop("_calls", None)
        message = {"role": msg.get("role") or ("assistant" if kind == "completion" else "user"),
                   "content": _content(msg.get("content"))}
        if msg.get("tool_call_id") is not None:
            message["tool_call_id"] = msg["tool_call_id"]
        if calls:
            message["tool_calls"] = [_tool_call(calls[j]) for j in sorted(calls)]
        out.append(message)
    return out


def _event_messages(events: list[tuple[Any, dict]], prompt: bool) -> list[dict]:
    out: list[dict] = []
    for name, attrs in events:
        body = _json(attrs["gen_ai.event.content"], "gen_ai.event.content") if "gen_ai.event.content" in attrs else attrs
        body = body if isinstance(body, dict) else {"content": body}
        if prompt and name in EVENT_ROLES:
            message = {"role": body.get("role") or EVENT_ROLES[name], "content": _content(body.get("content"))}
            if body.get("tool_calls"):
                message["tool_calls"] = [_tool_call(c) for c in _json(body["tool_calls"], "tool_calls")]
            if EVENT_ROLES[name] == "tool" and body.get("id") is not None:
                message["tool_call_id"] = body["id"]
            out.append(message)
        elif not prompt and name == "gen_ai.choice":
            message = _json(body.get("message"), "message") if body.get("message") is not None else body
            message = message if isinstance(message, dict) else {"content": message}
            reply = {"role": "assistant", "content": _content(message.get("content"))}
            if message.get("tool_calls"):
                reply["tool_calls"] = [_tool_call(c) for c in _json(message["tool_calls"], "tool_calls")]
            out.append(reply)
        elif name in ("gen_ai.content.prompt", "gen_ai.content.completion") and prompt == name.endswith("prompt"):
            listed = _json(attrs.get("gen_ai.prompt" if prompt else "gen_ai.completion"), name)
            for message in listed if isinstance(listed, list) else ():
                if isinstance(message, dict):
                    out.append({**message, "content": _content(message.get("content"))})
    return out


def _tool_call(call: Any) -> dict:
    call = call if isinstance(call, dict) else {}
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = function.get("arguments")
    return {"id": call.get("id"), "type": "function", "function": {
        "name": function.get("name"),
        "arguments": arguments if isinstance(arguments, str) or arguments is None else orjson.dumps(arguments).decode()}}


def _content(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    return orjson.dumps(value).decode()


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
