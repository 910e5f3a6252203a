"""A small local server that speaks the OpenAI chat-completions protocol, for tests and benchmarks of clients.

It answers `POST /v1/chat/completions` with JSON, or with an SSE stream when `stream` is true (usage in a last chunk
when `stream_options.include_usage`), over HTTP/1.1 keep-alive. Replies are made up, not generated:
- a request with `tools` whose last message is not a tool result gets a call of the first tool;
- otherwise the reply is "reply N to: <the last user message>", N counting the server's replies (so a regeneration
  differs from the reply it replaces);
- `n` choices; `model` is echoed. Faults by model name: "fail-500" and "fail-400" answer that status,
  "drop-mid-stream" sends two chunks and then drops the connection.

    with serve() as base_url: ...                   # a thread in this process
    python tests/openai_server.py --port 8765       # a process of its own (benchmarks)
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import orjson

_counter = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body go out as separate writes: without this, Nagle's algorithm and the client's delayed ACK
        # hold each reply back ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # the name http.server calls
        body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
        model = body.get("model") or "local"
        if model in ("fail-500", "fail-400"):
            status = int(model[-3:])
            return self._json(status, {"error": {"message": f"injected {status}", "type": "server_error", "code": None}})
        choices = [_choice(body, i) for i in range(int(body.get("n") or 1))]
        usage = {"prompt_tokens": sum(len(str(m.get("content") or "").split()) for m in body.get("messages", [])),
                 "completion_tokens": sum(len((c["message"]["content"] or "").split()) + 1 for c in choices)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        reply_id = f"chatcmpl-{next(_counter)}"
        if body.get("stream"):
            return self._stream(reply_id, model, choices, usage, body)
        self._json(200, {"id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                         "choices": choices, "usage": usage})

    def _json(self, status: int, payload: dict) -> None:
        data = orjson.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, reply_id: str, model: str, choices: list[dict], usage: dict, body: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        sent = 0
        for index, choice in enumerate(choices):
            for delta in _deltas(choice["message"]):
                self._event({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
                sent += 1
                if model == "drop-mid-stream" and sent == 2:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
            self._event({**base, "choices": [{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self._event({**base, "choices": [], "usage": usage})
        self._write(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _event(self, payload: dict) -> None:
        self._write(b"data: " + orjson.dumps(payload) + b"\n\n")

    def _write(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _choice(body: dict, index: int) -> dict:
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    if tools and not (messages and messages[-1].get("role") == "tool"):
        name = tools[0].get("function", {}).get("name", "tool")
        call = {"id": f"call_{next(_counter)}", "type": "function",
                "function": {"name": name, "arguments": orjson.dumps({"city": "Paris", "unit": "celsius"}).decode()}}
        return {"index": index, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]}}
    last_user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    if not isinstance(last_user, str):
        last_user = " ".join(p.get("text", "") for p in last_user if isinstance(p, dict))
    text = f"reply {next(_counter)} to: {last_user[:60]}"
    return {"index": index, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}


def _deltas(message: dict) -> Iterator[dict]:
    """The message as stream deltas: the role first, then the text a few words at a time, or each tool call's name
    and then its arguments in two halves."""
    yield {"role": "assistant", "content": ""}
    words = (message.get("content") or "").split(" ")
    for start in range(0, len(words), 3):
        yield {"content": " ".join(words[start : start + 3]) + (" " if start + 3 < len(words) else "")}
    for i, call in enumerate(message.get("tool_calls") or []):
        args = call["function"]["arguments"]
        yield {"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                               "function": {"name": call["function"]["name"], "arguments": ""}}]}
        half = len(args) // 2
        yield {"tool_calls": [{"index": i, "function": {"arguments": args[:half]}}]}
        yield {"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that hung up is no error here
        pass


@contextlib.contextmanager
def serve(port: int = 0) -> Iterator[str]:
    """Serve on 127.0.0.1 in a thread; yields the base URL for `OpenAI(base_url=...)`."""
    server = Server(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    port = parser.parse_args().port
    server = Server(("127.0.0.1", port), Handler)
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    server.serve_forever()
