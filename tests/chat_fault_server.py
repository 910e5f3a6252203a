"""A fault-injecting OpenAI-compatible chat server, for the generation client's tests and benchmark.

Each request takes the next action of its `plan` (then `default`):
  "ok"    a JSON chat completion with `usage`
  "sse"   the answer as an SSE stream without `usage` or `[DONE]`, as `transformers serve` 4.57 sends it
  "429"   429 with `Retry-After: <retry_after>`
  "500"   500 with an OpenAI-style error body ("401" likewise: a refused key)
  "hang"  answers after `hang` seconds (longer than the client's timeout)
  "die"   the process exits at once, mid-request (only in a process of its own)
Every answer waits `delay` seconds first. The reply is "candidate from <model> for: <last user message>".
`requests` logs (monotonic time, action, request body, headers) of each request; GET /stats gives their count.

    with FaultServer(plan=["429", "ok"]) as server: server.url ...          # a thread in this process
    python tests/chat_fault_server.py --port 8766 --delay 0.2 [--die-after N]  # a process of its own
"""
from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 resets connections when a benchmark opens 16 at once


class FaultServer:
    def __init__(self, plan: list[str] | None = None, default: str = "ok", delay: float = 0.0, retry_after: str = "1",
                 hang: float = 30.0, die_after: int | None = None, port: int = 0):
        self.plan = list(plan or [])
        self.default = default
        self.delay = delay
        self.retry_after = retry_after
        self.hang = hang
        self.die_after = die_after
        self.requests: list[tuple[float, str, dict, dict]] = []
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def next_action(self, body: dict, headers: dict) -> str:
        with self.lock:
            action = self.plan.pop(0) if self.plan else self.default
            self.requests.append((time.monotonic(), action, body, headers))
            if self.die_after is not None and len(self.requests) > self.die_after:
                action = "die"
            return action

    def __enter__(self) -> "FaultServer":
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: FaultServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._send(200, "application/json", orjson.dumps({"requests": len(server.requests)}))

        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            action = server.next_action(body, dict(self.headers))
            if action == "die":
                os._exit(3)
            time.sleep(server.hang if action == "hang" else server.delay)
            if action == "429":
                return self._send(429, "application/json", b'{"error": {"message": "slow down"}}',
                                  {"Retry-After": server.retry_after})
            if action == "401":
                return self._send(401, "application/json", b'{"error": {"message": "invalid api key"}}')
            if action == "500":
                return self._send(500, "application/json", b'{"error": {"message": "injected 500"}}')
            last = next((m.get("content") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
            text = f"candidate from {body.get('model')} for: {str(last)[:80]}"
            if action == "sse":
                events = [{"id": "req_0", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
                          *({"id": "req_0", "choices": [{"index": 0, "delta": {"content": w + " "}}]} for w in text.split()),
                          {"id": "req_0", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
                data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
                return self._send(200, "text/event-stream", data)
            usage = {"prompt_tokens": 20, "completion_tokens": len(text.split()), "total_tokens": 20 + len(text.split())}
            answer = {"id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "model": body.get("model"),
                      "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                      "usage": usage}
            self._send(200, "application/json", orjson.dumps(answer))

        def _send(self, status: int, kind: str, data: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                self.close_connection = True

    return Handler


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--default", default="ok")
    parser.add_argument("--die-after", type=int, default=None)
    args = parser.parse_args()
    fault = FaultServer(default=args.default, delay=args.delay, die_after=args.die_after, port=args.port)
    print(fault.url, flush=True)
    fault.httpd.serve_forever()
