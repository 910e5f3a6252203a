"""OTLP/HTTP trace requests as exporters send them: protobuf or JSON, gzip/deflate or not, read by the GenAI rules of
`curation.ingest.otel`; and the answers OTLP expects (an ExportTraceServiceResponse, a google.rpc.Status).

A protobuf request is read from its message objects (`read_protobuf`): each span's attributes go straight to the
`otel.Fields` the rules read, as `otel.json_fields` gives them for the same span in OTLP/JSON. The OTLP/JSON shape of
a request (`to_json`) is built only when it must be written down: to the spool, or for a span's quarantine entry.
"""
from __future__ import annotations

import base64
import zlib
from typing import Any, Callable

import orjson

from curation.ingest import otel
from curation.ingest.records import Reject

_SCALARS = {"string_value": "stringValue", "bool_value": "boolValue", "int_value": "intValue",
            "double_value": "doubleValue"}


class BadRequest(ValueError):
    """The request cannot be read; `status` is the HTTP status to answer and the message names the problem."""

    def __init__(self, status: int, message: str, counter: str):
        super().__init__(message)
        self.status = status
        self.counter = counter


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding, refusing one that inflates past `limit` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(415, f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or none", "bad_encoding")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
        if not inflater.eof:
            if len(out) > limit:
                raise BadRequest(413, f"body is over the limit of {limit} bytes once inflated", "too_large")
            raise BadRequest(400, f"truncated {encoding} body", "bad_encoding")
    except zlib.error as exc:
        raise BadRequest(400, f"broken {encoding} body: {exc}", "bad_encoding") from None
    return out


def parse_json(body: bytes) -> Any:
    """The JSON body; orjson refuses nesting deeper than 1,024 levels, which is answered as too deep."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc).splitlines()[0][:160]
        if "depth limit" in reason:
            raise BadRequest(400, f"JSON nested too deep ({reason})", "too_deep") from None
        raise BadRequest(400, f"malformed JSON: {reason}", "bad_json") from None


def parse_protobuf(body: bytes):
    """An ExportTraceServiceRequest from its protobuf encoding."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError) as exc:
        raise BadRequest(400, f"broken protobuf: not an ExportTraceServiceRequest ({exc})", "bad_protobuf") from None
    return request


def read_protobuf(reader: otel.Reader, request, source: str, number: int) -> otel.Found:
    """`reader.read_export` for a protobuf ExportTraceServiceRequest: the same conversations and rejections."""
    found: list = []
    rejected: list = []
    read = 0
    for rs in request.resource_spans:
        try:
            service, trouble = _attrs(rs.resource.attributes, 0).get("service.name"), None
        except Reject as exc:
            service, trouble = None, f"its resource cannot be read: {exc}"
        for ss in rs.scope_spans:
            for span in ss.spans:
                try:
                    fields = _fields(span)
                    chat, why = fields is not None, trouble
                except Reject as exc:
                    fields, why = None, trouble or str(exc)
                    chat = any(kv.key.startswith("gen_ai.") for kv in span.attributes) or any(
                        e.name.startswith("gen_ai.") for e in span.events)
                if not chat:
                    reader.skipped_spans += 1
                    continue
                convs, bad, n = reader.chat_span(fields, why, source, number, _raw(span), service, span.span_id.hex())
                found += convs
                rejected += bad
                read += n
    return found, rejected, read


def _raw(span) -> Callable[[], bytes]:
    return lambda: orjson.dumps(_span(span))


def _fields(span) -> otel.Fields | None:
    """A protobuf span's `otel.Fields` when it is a GenAI chat span (None otherwise), as `otel.json_fields`."""
    attrs = _attrs(span.attributes, 0)
    if not otel.is_chat(attrs, [e.name for e in span.events]):
        return None
    return otel.Fields(attrs, span.trace_id.hex(), span.span_id.hex(), span.start_time_unix_nano,
                       span.end_time_unix_nano, [(e.name, _attrs(e.attributes, 0)) for e in span.events],
                       span.status.code, span.status.message)


def _attrs(items, depth: int) -> dict:
    """KeyValue list → {key: python value}, as `otel.attributes` reads the same list in OTLP/JSON."""
    out = {}
    for kv in items:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value" and depth <= otel.MAX_DEPTH:  # most values: no call
            out[kv.key] = value.string_value
        else:
            try:
                out[kv.key] = _python(value, kind, depth)
            except Reject as exc:
                raise Reject(f"attribute {kv.key[:100]!r}: {exc}") from None
    return out


def _python(value, kind: str | None, depth: int) -> Any:
    if kind is None:
        return None
    if depth > otel.MAX_DEPTH:
        raise Reject(f"values nested deeper than {otel.MAX_DEPTH} levels")
    if kind == "array_value":
        return [_python(v, v.WhichOneof("value"), depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attrs(value.kvlist_value.values, depth + 1)
    if kind == "bytes_value":  # OTLP/JSON writes bytes as base64, and otel keeps that text
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def span_count(request) -> int:
    """How many spans a protobuf request holds (what `partial_success.rejected_spans` counts against)."""
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def to_json(request) -> dict:
    """A protobuf ExportTraceServiceRequest in its OTLP/JSON form (hex ids, integer enums), for the spool."""
    return {"resourceSpans": [{
        "resource": {"attributes": _attributes(rs.resource.attributes)},
        "scopeSpans": [{"scope": {"name": ss.scope.name, "version": ss.scope.version},
                        "spans": [_span(s) for s in ss.spans]} for ss in rs.scope_spans],
    } for rs in request.resource_spans]}


def _span(span) -> dict:
    return {
        "traceId": span.trace_id.hex(), "spanId": span.span_id.hex(), "parentSpanId": span.parent_span_id.hex(),
        "name": span.name, "kind": span.kind,
        "startTimeUnixNano": span.start_time_unix_nano, "endTimeUnixNano": span.end_time_unix_nano,
        "attributes": _attributes(span.attributes),
        "events": [{"timeUnixNano": e.time_unix_nano, "name": e.name, "attributes": _attributes(e.attributes)}
                   for e in span.events],
        "status": {"code": span.status.code, "message": span.status.message},
    }


def _attributes(items) -> list[dict]:
    out = []
    for kv in items:
        value = kv.value
        kind = value.WhichOneof("value")
        # most values are scalars: no call to _value for them
        out.append({"key": kv.key, "value": {_SCALARS[kind]: getattr(value, kind)} if kind in _SCALARS else _value(value)})
    return out


def _value(value) -> dict:
    kind = value.WhichOneof("value")
    if kind in _SCALARS:
        return {_SCALARS[kind]: getattr(value, kind)}
    if kind == "array_value":
        return {"arrayValue": {"values": [_value(v) for v in value.array_value.values]}}
    if kind == "kvlist_value":
        return {"kvlistValue": {"values": _attributes(value.kvlist_value.values)}}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode()}
    return {}


def json_span_count(request: dict) -> int:
    """How many spans an OTLP/JSON request holds (what `partial_success.rejected_spans` counts against)."""
    total = 0
    for resource in request.get("resourceSpans") or ():
        for scope in (resource.get("scopeSpans") if isinstance(resource, dict) else None) or ():
            spans = scope.get("spans") if isinstance(scope, dict) else None
            total += len(spans) if isinstance(spans, list) else 0
    return total


def response(protobuf: bool, rejected: int = 0, message: str = "") -> bytes:
    """ExportTraceServiceResponse: empty when everything was accepted, else its partial_success."""
    if protobuf:
        if not rejected:
            return b""
        inner = _field(1, _varint(rejected), 0) + (_field(2, message.encode(), 2) if message else b"")
        return _field(1, inner, 2)
    if not rejected:
        return b"{}"
    return orjson.dumps({"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}})


def status(protobuf: bool, code: int, message: str) -> bytes:
    """google.rpc.Status, the body OTLP puts beside a 4xx/5xx (code: a gRPC code, 3 = INVALID_ARGUMENT)."""
    if protobuf:
        return _field(1, _varint(code), 0) + _field(2, message.encode(), 2)
    return orjson.dumps({"code": code, "message": message})


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes, wire: int) -> bytes:
    """One protobuf field: wire type 0 (varint, `payload` already encoded) or 2 (length-delimited)."""
    key = _varint(number << 3 | wire)
    return key + payload if wire == 0 else key + _varint(len(payload)) + payload
