"""One set of GenAI rules: the same spans through `curate ingest --format otel` (an OTLP/JSON file) and through
`curate collect` (protobuf bodies, read from the message objects, and JSON bodies) give the same conversations and
reject the same spans for the same reasons.

The spans cover every message form, conversation ids, every OTLP value type (string, int, double, bool, bytes, array,
key/value list), spans that are skipped, and spans that are rejected (no content, broken JSON messages, a failed call,
a bad token count, values nested too deep, a resource that cannot be read).
"""
from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from google.protobuf.json_format import ParseDict

from curation.ingest import ingest
from curation.store import Store
from tests.test_collect import collecting, post, stored
from tests.test_ingest_otel import parts, span

KEEP = ("messages", "model", "created_at", "session_id", "user_hash", "metadata", "n_messages")


def value(v) -> dict:
    """An OTLP/JSON AnyValue of every type."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, bytes):
        return {"bytesValue": base64.b64encode(v).decode()}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": value(x)} for k, x in v.items()]}}
    return {"stringValue": v}


def chat_span(n: int, attrs: dict, events: list | None = None, **extra) -> dict:
    s = span(n, {}, **extra)
    s["attributes"] = [{"key": k, "value": value(v)} for k, v in attrs.items()]
    s["events"] = [{"name": name, "timeUnixNano": s["startTimeUnixNano"],
                    "attributes": [{"key": k, "value": value(v)} for k, v in a.items()]} for name, a in events or []]
    return s


def nested(levels: int, bottom: dict | None = None) -> dict:
    out = bottom or {"stringValue": "bottom"}
    for _ in range(levels):
        out = {"arrayValue": {"values": [out]}}
    return out


def requests() -> list[dict]:
    msgs = orjson.dumps
    io = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
          "gen_ai.input.messages": msgs([parts("user", "Hi")]).decode(),
          "gen_ai.output.messages": msgs([parts("assistant", "Hello", finish_reason="stop")]).decode()}
    typed = chat_span(1, {**io, "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": "3",
                          "gen_ai.request.temperature": 0.25, "gen_ai.request.stream": True, "blob": b"\x00\xffz",
                          # every value type, in attributes the conversation keeps
                          "gen_ai.response.finish_reasons": ["stop", 1, 2.5, False, b"b", {"k": [b"v"]}],
                          "user.id": b"\x00\xffu", "gen_ai.provider.name": {"a": 1, "b": ["x", {"c": b"y"}]},
                          "gen_ai.response.model": 7, "gen_ai.response.id": 1.5})
    indexed = chat_span(2, {"gen_ai.system": "openai", "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Weather?",
                            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.tool_calls.0.id": "c1",
                            "gen_ai.completion.0.tool_calls.0.name": "w",
                            "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Oslo"}', "enduser.id": 42})
    events = chat_span(3, {"gen_ai.operation.name": "chat"}, events=[
        ("gen_ai.system.message", {"content": "Be kind."}),
        ("gen_ai.user.message", {"gen_ai.event.content": msgs({"content": "Hello"}).decode()}),
        ("gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": msgs({"role": "assistant", "content": "Hi!"}).decode()})])
    turn = {"gen_ai.operation.name": "chat", "gen_ai.conversation.id": "conv-1", "gen_ai.request.model": "m"}
    group = [chat_span(12, {**turn, "gen_ai.input.messages": msgs([parts("user", "Buy")]).decode(),
                            "gen_ai.output.messages": msgs([parts("assistant", "Done.")]).decode()}, start=9),
             chat_span(10, {**turn, "gen_ai.system_instructions": msgs([{"type": "text", "content": "Sell."}]).decode(),
                            "gen_ai.input.messages": msgs([parts("user", "Shoes?")]).decode(),
                            "gen_ai.output.messages": msgs([parts("assistant", "Size?")]).decode(),
                            "gen_ai.usage.input_tokens": 5})]
    skipped = [chat_span(20, {"http.request.method": "POST"}), chat_span(21, {"gen_ai.operation.name": "embeddings"}),
               chat_span(22, {"gen_ai.operation.name": "embeddings", "x": 1}, events=[("e", {"deep": 1})])]
    bad = [chat_span(30, {"gen_ai.operation.name": "chat"}),
           chat_span(31, {**io, "gen_ai.input.messages": "[{not json"}),
           chat_span(32, {"gen_ai.operation.name": "chat", "gen_ai.input.messages": io["gen_ai.input.messages"]},
                     status={"code": 2, "message": "rate limited"}),
           chat_span(33, {**io, "gen_ai.usage.input_tokens": "lots"})]
    deep = chat_span(34, io)
    deep["attributes"].append({"key": "gen_ai.deep", "value": nested(40)})
    deep_event = chat_span(35, io, events=[("gen_ai.choice", {"x": 1})])
    deep_event["events"][0]["attributes"].append({"key": "k", "value": {"kvlistValue": {"values": [
        {"key": "inner", "value": nested(33)}]}}})
    deep_kv = chat_span(36, {**io, "gen_ai.deep": {}})
    # a string 33 levels down, in a key/value list (protobuf refuses messages nested past 100)
    deep_kv["attributes"][-1]["value"] = nested(32, {"kvlistValue": {"values": [{"key": "k", "value": value("s")}]}})
    resource = {"attributes": [{"key": "service.name", "value": value("shop-bot")}]}
    bad_resource = {"attributes": [{"key": "service.name", "value": nested(40)}]}
    return [
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"},
                                                                   "spans": [typed, indexed, events, *skipped]}]}]},
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": [*group, *bad]}]},
                           {"resource": {}, "scopeSpans": [{"spans": [deep, deep_event, deep_kv]}]}]},
        {"resourceSpans": [{"resource": bad_resource, "scopeSpans": [{"spans": [chat_span(40, io), skipped[0]]}]}]},
    ]


def protobuf(request: dict) -> bytes:
    """The same request as the SDK's protobuf exporter encodes it (ids are bytes: base64 in protobuf's JSON mapping)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = orjson.loads(orjson.dumps(request))
    for resource in request["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for s in scope["spans"]:
                for key in ("traceId", "spanId"):
                    s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
    return ParseDict(request, ExportTraceServiceRequest()).SerializeToString()


def rejected(response: bytes, is_protobuf: bool) -> int:
    if not response or response == b"{}":
        return 0
    if is_protobuf:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        answer = ExportTraceServiceResponse()
        answer.ParseFromString(response)
        return answer.partial_success.rejected_spans
    return int(orjson.loads(response)["partialSuccess"]["rejectedSpans"])


def quarantined(home: Path, url: str) -> list[str]:
    store = Store.open(home, url)
    try:
        return sorted(orjson.loads(line)["reason"] for path in store.quarantine_dir.glob("*.jsonl")
                      for line in path.read_bytes().splitlines())
    finally:
        store.dispose()


def test_ingest_otel_and_collect_protobuf_and_json_give_the_same_conversations(tmp_path):
    pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    sent = requests()
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in sent))
    homes = {name: (tmp_path / name, f"sqlite:///{tmp_path / name / 'curate.db'}") for name in ("file", "pb", "json")}
    summary = ingest(Store.open(*homes["file"]), [path], fmt="otel", progress=False)
    assert summary["ingested"] == 5 and summary["conversations"] == 4 and summary["quarantined"] == 8, summary

    for name, content_type, encode in (("pb", "application/x-protobuf", protobuf), ("json", "application/json", orjson.dumps)):
        home, url = homes[name]
        with collecting(home, env={"CURATE_DATABASE_URL": url}) as (proc, base):
            answers = [post(f"{base}/v1/traces", encode(r), content_type) for r in sent]
        assert [code for code, _, _ in answers] == [200, 200, 200], answers
        assert sum(rejected(body, name == "pb") for _, _, body in answers) == 8

    conversations = {name: {k: [v[c] for c in KEEP] for k, v in stored(*homes[name]).items()} for name in homes}
    assert len(conversations["file"]) == 4  # 3 of one span each, and conv-1 of two
    assert conversations["pb"] == conversations["file"]
    assert conversations["json"] == conversations["file"]
    typed = orjson.loads(conversations["pb"][f"otel:{1:032x}:{1:016x}"][KEEP.index("metadata")])
    assert typed["usage"] == {"input_tokens": 7, "output_tokens": 3} and typed["service"] == "shop-bot"
    assert typed["finish_reasons"] == ["stop", "1", "2.5", "False", "Yg==", "{'k': ['dg==']}"]  # bytes: base64
    assert typed["provider"] == {"a": 1, "b": ["x", {"c": "eQ=="}]} and typed["response_id"] == 1.5
    reasons = {name: quarantined(*homes[name]) for name in homes}
    assert len(reasons["file"]) == 8 and reasons["pb"] == reasons["file"] and reasons["json"] == reasons["file"]
    text = " | ".join(reasons["file"])
    assert "nested deeper than 32 levels" in text and "its resource cannot be read" in text and "rate limited" in text


def test_protobuf_spooled_while_the_store_is_locked_is_drained_into_the_same_conversations(tmp_path, monkeypatch):
    """The spool keeps a protobuf request in its OTLP/JSON shape (built only then), which `ingest --format otel`
    reads back when the store returns."""
    from tests.test_collect_faults import locked, wait_for

    monkeypatch.delenv("CURATE_DATABASE_URL", raising=False)
    sent = requests()
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in sent))
    file_home, url = tmp_path / "file", f"sqlite:///{tmp_path / 'file' / 'curate.db'}"
    ingest(Store.open(file_home, url), [path], fmt="otel", progress=False)
    home = tmp_path / "home"
    with collecting(home, "--store-timeout", "0.2") as (proc, base):
        assert post(f"{base}/v1/traces", protobuf(sent[0]), "application/x-protobuf")[0] == 200
        with locked(home):
            for request in sent[1:]:
                assert post(f"{base}/v1/traces", protobuf(request), "application/x-protobuf")[0] == 200
            spooled = [p for p in (home / "spool").glob("collect-*-otel*.jsonl") if p.stat().st_size]
            assert spooled, "the requests should be in the spool while the store is locked"
        wait_for(lambda: not list((home / "spool").glob("collect-*-otel*.jsonl")))
    conversations = {name: {k: [v[c] for c in KEEP] for k, v in stored(h, u).items()}
                     for name, h, u in (("file", file_home, url), ("pb", home, f"sqlite:///{home / 'curate.db'}"))}
    assert len(conversations["file"]) == 4 and conversations["pb"] == conversations["file"]
    assert sorted(quarantined(home, f"sqlite:///{home / 'curate.db'}")) == quarantined(file_home, url)
