"""The HTTP side of `curate collect`: a plain ASGI app served by uvicorn (httptools and uvloop when installed).

Why uvicorn and not `http.server`: its HTTP parser (httptools, in C) reads chunked bodies, keep-alive and pipelining
correctly, it closes idle and slow connections, and it stops gracefully on SIGTERM (no new connections, in-flight
requests answered, then the lifespan shutdown, where the writer drains). No framework on top: three routes do not
need one, and each layer costs time per request. Parsing runs in a worker thread for large bodies, so one big batch
does not hold up the acknowledgements of small ones.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from curation.collect import otlp
from curation.collect.auth import authorized
from curation.collect.openapi import SPEC
from curation.collect.otlp import BadRequest
from curation.collect.writer import Busy, Collector, Unit
from curation.ingest import otel
from curation.ingest.parse import parse_item
from curation.ingest.readers import Item
from curation.ingest.records import Limits, classify

INLINE_BYTES = 32 << 10  # bodies up to this size are parsed on the event loop; larger ones in a thread
RETRY_AFTER = 5  # seconds, in a 429
JSON = [(b"content-type", b"application/json")]


class App:
    """ASGI callable. `collector` owns the store and the spool; `max_body` bounds a body, compressed or not."""

    def __init__(self, collector: Collector, limits: Limits, max_body: int = 10 << 20):
        self.collector = collector
        self.limits = limits
        self.max_body = max_body
        self._numbers = itertools.count(1)  # request numbers: the "line" of a quarantined span or record
        self.ready = lambda: None  # called once the server is up (serve() announces the address)
        self.routes = {"/v1/traces": self.traces, "/v1/conversations": self.conversations, "/v1/feedback": self.feedback}

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        count = self.collector.count
        protobuf = path == "/v1/traces" and headers.get(b"content-type", b"").lower().startswith(b"application/x-protobuf")
        try:
            if method == "GET" and path == "/openapi.json":
                return await _send(send, 200, orjson.dumps(SPEC), JSON)
            if not authorized(headers.get(b"authorization"), self.collector.hashes):
                raise BadRequest(401, "missing or unknown bearer token: send 'Authorization: Bearer TOKEN' with a token "
                                      "from `curate collect token create NAME`", "unauthorized")
            if method == "GET" and path == "/v1/status":
                return await _send(send, 200, orjson.dumps(self.collector.summary()), JSON)
            handler = self.routes.get(path)
            if handler is None:
                raise BadRequest(404, f"no route {path}: POST /v1/traces, /v1/conversations or /v1/feedback", "not_found")
            if method != "POST":
                raise BadRequest(405, f"{path} takes POST", "bad_method")
            body = await self._body(receive, headers)
            count("requests")
            status, payload, content_type = await handler(body, headers, protobuf)
        except BadRequest as exc:
            count(f"refused_{exc.counter}")
            status, content_type = exc.status, b"application/x-protobuf" if protobuf else b"application/json"
            payload = otlp.status(protobuf, 3, str(exc)) if path == "/v1/traces" else orjson.dumps({"error": str(exc)})
            extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            return await _send(send, status, payload, [(b"content-type", content_type), *extra])
        except Busy as exc:
            count("refused_busy")
            message = f"busy: {exc}; retry after {RETRY_AFTER} s"
            payload = otlp.status(protobuf, 8, message) if path == "/v1/traces" else orjson.dumps({"error": message})
            return await _send(send, 429 if "shutting" not in str(exc) else 503, payload,
                               [(b"content-type", b"application/x-protobuf" if protobuf else b"application/json"),
                                (b"retry-after", str(RETRY_AFTER).encode())])
        await _send(send, status, payload, [(b"content-type", content_type)])

    async def _body(self, receive, headers: dict) -> bytes:
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.max_body:
            raise BadRequest(413, f"body of {int(length)} bytes is over the limit of {self.max_body} "
                                  "(curate collect --max-body)", "too_large")
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "the client went away before sending the whole body", "disconnected")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                raise BadRequest(413, f"body is over the limit of {self.max_body} bytes (curate collect --max-body)",
                                 "too_large")
            chunks.append(chunk)
            if not message.get("more_body"):
                body = b"".join(chunks)
                return otlp.decompress(body, headers.get(b"content-encoding", b"").decode("latin-1"), self.max_body)

    async def _parse(self, body: bytes, parse):
        if len(body) <= INLINE_BYTES:
            return parse()
        return await asyncio.get_running_loop().run_in_executor(None, parse)

    async def _store(self, unit: Unit) -> str:
        """Hand `unit` to the writer and wait until it is in the store or the spool."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        unit.done = lambda outcome: loop.call_soon_threadsafe(done.set_result, outcome)
        self.collector.submit(unit)
        outcome = await done
        if outcome == "full":
            raise Busy("the store is unavailable and the spool is full")
        if outcome == "failed":
            raise Busy("neither the store nor the spool could take the data")
        return outcome

    async def traces(self, body: bytes, headers: dict, protobuf: bool) -> tuple[int, bytes, bytes]:
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type not in (b"application/x-protobuf", b"application/json"):
            raise BadRequest(415, f"Content-Type {content_type.decode('latin-1')!r}: OTLP/HTTP sends "
                                  "application/x-protobuf or application/json", "bad_content_type")
        number = next(self._numbers)

        def parse() -> tuple:
            reader = otel.Reader(self.limits)
            try:
                if protobuf:
                    request = otlp.parse_protobuf(body)
                    found, rejected, read = otlp.read_protobuf(reader, request, "collect", number)
                    spans, spool = otlp.span_count(request), lambda: [otlp.to_json(request)]
                else:
                    request = otlp.parse_json(body)
                    if not isinstance(request, dict) or not isinstance(request.get("resourceSpans"), list):
                        raise BadRequest(400, "not an OTLP trace export: expected an object with 'resourceSpans'",
                                         "not_otlp")
                    found, rejected, read = reader.read_export(request, "collect", number)
                    spans, spool = otlp.json_span_count(request), lambda: [request]
                for more, bad, _ in reader.finish():
                    found, rejected = found + more, rejected + bad
            except RecursionError:
                raise BadRequest(400, "OTLP attribute values nested too deep", "too_deep") from None
            return spool, spans, found, rejected, read, reader.skipped_spans

        spool, spans, found, rejected, read, skipped = await self._parse(body, parse)
        counts = {"spans": spans, "genai_spans": read, "skipped_spans": skipped, "rejected_spans": len(rejected)}
        if found or rejected:
            await self._store(Unit(otel=True, apply=lambda job: job.take_found(found, [], read), spool=spool,
                                   size=len(body), rejected=rejected))
            counts["conversations"] = len(found)
        self.collector.add(counts)
        message = "; ".join(reason for _, reason in rejected[:5])[:1000]
        content = b"application/x-protobuf" if protobuf else b"application/json"
        return 200, otlp.response(protobuf, len(rejected), message), content

    async def conversations(self, body: bytes, headers: dict, protobuf: bool) -> tuple[int, bytes, bytes]:
        return await self._records(body, "chat", "conversations")

    async def feedback(self, body: bytes, headers: dict, protobuf: bool) -> tuple[int, bytes, bytes]:
        return await self._records(body, "event", "feedback")

    async def _records(self, body: bytes, kind: str, counter: str) -> tuple[int, bytes, bytes]:
        """One record or a JSON list of them: each validated as `curate ingest` does; the valid ones are stored."""
        number = next(self._numbers)

        def parse() -> tuple[list, list]:
            records = otlp.parse_json(body)
            records = records if isinstance(records, list) else [records]
            good, bad = [], []
            for i, record in enumerate(records):
                raw = orjson.dumps(record)
                item = Item("collect", number, raw, record)
                if classify(record) != kind:
                    bad.append({"index": i, "error": _wrong_kind(record, kind)})
                    continue
                outcome, payload = parse_item(item, "auto", self.limits)
                (good if outcome != "reject" else bad).append(
                    (raw, outcome, payload) if outcome != "reject" else {"index": i, "error": payload})
            return good, bad

        good, bad = await self._parse(body, parse)
        self.collector.count(f"rejected_{counter}", len(bad))
        if not good:
            if not bad:
                raise BadRequest(400, "no records: send one JSON object or a list of them", "empty")
            return 400, orjson.dumps({"accepted": 0, "rejected": bad}), b"application/json"

        def apply(job) -> None:
            for raw, outcome, payload in good:
                job.take("collect", number, raw, outcome, payload)

        durable = await self._store(Unit(otel=False, apply=apply, spool=lambda: [orjson.loads(raw) for raw, _, _ in good],
                                         size=len(body)))
        self.collector.count(counter, len(good))
        return 200, orjson.dumps({"accepted": len(good), "rejected": bad, "durable": durable}), b"application/json"

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":  # uvicorn handles SIGTERM from here on
                await send({"type": "lifespan.startup.complete"})
                self.ready()
            elif message["type"] == "lifespan.shutdown":  # uvicorn has stopped accepting and answered what it had
                self.summary = await asyncio.get_running_loop().run_in_executor(None, self.collector.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _wrong_kind(record: Any, kind: str) -> str:
    if kind == "chat":
        return "a conversation needs 'messages' (OpenAI chat format); feedback events go to /v1/feedback"
    if isinstance(record, dict) and "messages" in record:
        return "this is a conversation: send it to /v1/conversations"
    return "a feedback event needs 'conversation_id' and 'type'"


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
