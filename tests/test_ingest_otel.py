"""`curate ingest --format otel`: OTLP/JSON trace files → conversations from GenAI spans.

Two sources of traces: spans that OpenTelemetry's own OpenAI instrumentation records around real `openai` calls to a
local server, encoded with the SDK's OTLP encoder (ids and enums rewritten as the Collector's file exporter writes
them: hex ids, integer enums); and hand-written lines, following the GenAI semantic conventions, for the forms that
instrumentation does not write (indexed attributes, span events, conversation ids) and for broken spans.
"""
from __future__ import annotations

import base64
import gzip

import openai
import orjson
import sqlalchemy as sa

from curation.store import loads
from curation.store.tables import conversations
from tests.openai_server import serve

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
T0 = 1_760_000_000_000_000_000  # ns


def stored(store) -> dict[str, dict]:
    with store.connect() as conn:
        found = {r.id: r._asdict() for r in conn.execute(sa.select(conversations))}
    for row in found.values():
        row["messages"], row["metadata"] = loads(row["messages"]), loads(row["metadata"])
    return found


def attr(key, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, list):
        return {"key": key, "value": {"arrayValue": {"values": [{"stringValue": v} for v in value]}}}
    return {"key": key, "value": {"stringValue": value}}


def span(span_id: int, attributes: dict, events: list | None = None, start: int = 0, **extra) -> dict:
    return {"traceId": f"{span_id:032x}", "spanId": f"{span_id:016x}", "name": "chat", "kind": 3,
            "startTimeUnixNano": str(T0 + start * 10**9), "endTimeUnixNano": str(T0 + start * 10**9 + 250_000_000),
            "attributes": [attr(k, v) for k, v in attributes.items()],
            "events": [{"name": n, "timeUnixNano": str(T0), "attributes": [attr(k, v) for k, v in a.items()]}
                       for n, a in events or []], "status": {}, **extra}


def export(*spans: dict, service: str = "shop-bot") -> bytes:
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": [attr("service.name", service)]},
                                            "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]})


def parts(role: str, text: str, **extra) -> dict:
    return {"role": role, "parts": [{"type": "text", "content": text}], **extra}


def collector_json(spans) -> bytes:
    """The SDK's OTLP encoding as the Collector's file exporter writes it (one export request per line)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource in request["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for s in scope["spans"]:
                s["traceId"] = base64.b64decode(s["traceId"]).hex()
                s["spanId"] = base64.b64decode(s["spanId"]).hex()
    return orjson.dumps(request)


def test_spans_from_the_opentelemetry_openai_instrumentation(instrumented, cli, store, tmp_path):
    provider, exporter = instrumented
    with serve() as url:
        client = openai.OpenAI(base_url=url, api_key="test")
        ask = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
        reply = client.chat.completions.create(model="local-model", messages=ask)
        weather = [{"role": "user", "content": "Weather in Paris?"}]
        list(client.chat.completions.create(model="local-model", messages=weather, tools=TOOLS, stream=True))
        with provider.get_tracer("app").start_as_current_span("GET /chat"):  # not GenAI: skipped
            pass
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    path = tmp_path / "traces.json"
    path.write_bytes(collector_json(spans[:2]) + b"\n" + collector_json(spans[2:]) + b"\n")

    summary = cli.json("ingest", path, "--format", "otel")
    assert summary["read"] == 2 and summary["ingested"] == 2 and summary["quarantined"] == 0
    assert summary["skipped_spans"] == 1
    found = sorted(stored(store).values(), key=lambda r: r["created_at"])
    assert found[0]["messages"] == [*ask, {"role": "assistant", "content": reply.choices[0].message.content}]
    assert found[0]["model"] == "local-model"
    meta = found[0]["metadata"]
    assert meta["response_id"] == reply.id and meta["provider"] == "openai" and meta["finish_reasons"] == ["stop"]
    assert meta["usage"] == {"input_tokens": reply.usage.prompt_tokens, "output_tokens": reply.usage.completion_tokens}
    call = found[1]["messages"][-1]["tool_calls"][0]
    assert found[1]["messages"][0] == weather[0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}
    again = cli.json("ingest", path, "--format", "otel")
    assert again["ingested"] == 0 and again["duplicates"] == 2


def test_every_message_form_conversation_ids_and_broken_spans(cli, store, tmp_path):
    indexed = span(1, {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-1",
                       "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Weather?",
                       "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_calls",
                       "gen_ai.completion.0.tool_calls.0.id": "call_1", "gen_ai.completion.0.tool_calls.0.name": "w",
                       "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Oslo"}', "user.id": "u-9"})
    events = span(2, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}, events=[
        ("gen_ai.system.message", {"content": "Be kind."}),
        ("gen_ai.user.message", {"gen_ai.event.content": orjson.dumps({"content": "Hello"}).decode()}),
        ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                           "message": orjson.dumps({"role": "assistant", "content": "Hi!"}).decode()})])
    # one conversation over three spans, across two lines and out of order; each call resends the history
    turn = {"gen_ai.operation.name": "chat", "gen_ai.conversation.id": "conv-1", "gen_ai.request.model": "m"}
    system = [{"type": "text", "content": "You sell shoes."}]
    first = span(10, {**turn, "gen_ai.system_instructions": orjson.dumps(system).decode(),
                      "gen_ai.input.messages": orjson.dumps([parts("user", "Red shoes?")]).decode(),
                      "gen_ai.output.messages": orjson.dumps([parts("assistant", "Size?")]).decode(),
                      "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 2}, start=0)
    second = span(11, {**turn, "gen_ai.input.messages": orjson.dumps(
        [parts("user", "Red shoes?"), parts("assistant", "Size?"), parts("user", "42")]).decode(),
        "gen_ai.output.messages": orjson.dumps([parts("assistant", "In stock.")]).decode(),
        "gen_ai.usage.input_tokens": 9, "gen_ai.usage.output_tokens": 3}, start=5)
    third = span(12, {**turn, "gen_ai.input.messages": orjson.dumps([parts("user", "Buy them")]).decode(),
                      "gen_ai.output.messages": orjson.dumps([parts("assistant", "Done.")]).decode()}, start=9)
    http = span(20, {"http.request.method": "POST", "url.path": "/chat"})
    embeddings = span(21, {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5"})
    no_content = span(30, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})
    bad_json = span(31, {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "[{not json"})
    failed = span(32, {"gen_ai.operation.name": "chat", "gen_ai.input.messages": orjson.dumps([parts("user", "x")]).decode()},
                  status={"code": 2, "message": "rate limited"})
    lines = [export(indexed, events, third, http), export(embeddings, no_content, bad_json, failed),
             b"{this is not json", b'{"something": "else"}', orjson.dumps({"resourceLogs": []})]
    path = tmp_path / "traces.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    later = tmp_path / "traces-2.json"
    later.write_bytes(export(second, first) + b"\n")

    summary = cli.json("ingest", path, later, "--format", "otel")
    assert summary["skipped_spans"] == 2 and summary["skipped_records"] == 1
    assert summary["read"] == 10 and summary["ingested"] == 5 and summary["quarantined"] == 5
    assert summary["conversations"] == 3
    found = stored(store)
    one = found[f"otel:{1:032x}:{1:016x}"]
    assert one["messages"][1]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}}]
    assert one["model"] == "gpt-4o-1" and one["user_hash"] and one["metadata"]["service"] == "shop-bot"
    assert found[f"otel:{2:032x}:{2:016x}"]["messages"] == [
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"}]
    merged = found[f"otel:{12:032x}:{12:016x}"]
    assert [m["content"] for m in merged["messages"]] == [
        "You sell shoes.", "Red shoes?", "Size?", "42", "In stock.", "Buy them", "Done."]
    assert merged["session_id"] == "conv-1" and merged["metadata"]["span_ids"] == [f"{i:016x}" for i in (10, 11, 12)]
    assert merged["metadata"]["usage"] == {"input_tokens": 14, "output_tokens": 5}
    assert merged["created_at"].startswith("2025-10-09T")  # the first span's start

    reasons = [orjson.loads(line) for line in open(summary["quarantine_file"], "rb")]
    assert {(r["file"], r["line"]) for r in reasons} == {(str(path), 2), (str(path), 3), (str(path), 4)}
    text = " | ".join(r["reason"] for r in reasons)
    assert "without prompt or completion content" in text and "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT" in text
    assert "'gen_ai.input.messages' is not valid JSON" in text and "rate limited" in text
    assert "malformed JSON" in text and "expected 'resourceSpans'" in text
    assert all(r["reason"].startswith("span ") for r in reasons if r["line"] == 2)

    again = cli.json("ingest", path, later, "--format", "otel")
    assert again["ingested"] == 0 and again["duplicates"] == 5 and again["quarantined"] == 5


def test_auto_format_points_at_otel(cli, tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_bytes(export(span(1, {"gen_ai.prompt.0.content": "x"})) + b"\n")
    summary = cli.json("ingest", path)
    reasons = [orjson.loads(line)["reason"] for line in open(summary["quarantine_file"], "rb")]
    assert reasons == ["an OpenTelemetry trace export (OTLP/JSON): ingest it with --format otel"]
