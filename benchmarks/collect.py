"""`curate collect` under load: throughput, acknowledgement latency, memory over time, and store outages.

    python benchmarks/collect.py throughput --batches 40            # GenAI spans/s in batches of 512 (target ≥ 5,000)
    python benchmarks/collect.py latency --rate 500 --seconds 30     # p99 acknowledgement at 500 requests/s (≤ 50 ms)
    python benchmarks/collect.py memory --minutes 10                 # RSS at the end ≤ 1.1 × RSS at 20% of the run
    python benchmarks/collect.py outages --spans 1000000 --outages 10  # exactly N conversations, none twice

The server is the real `curate collect` in a process of its own on 127.0.0.1, with a fresh SQLite home (or
--database-url). Requests are OTLP/HTTP protobuf bodies like the SDK's exporter sends: GenAI chat spans following
the semantic conventions (`gen_ai.input.messages` / `gen_ai.output.messages`), whose user prompts are the real
Arena-Hard questions in ../shared/data. Every span has its own ids, so every span must become one conversation.
Bodies are encoded before the clock starts; clients are keep-alive connections in threads of this process, which
shares the machine's cores with the server (say so beside any figure).

latency is open-loop: request i is due at i / rate seconds and its latency counts from then, so a server that falls
behind is charged for the wait (no coordinated omission). outages: a second process holds the SQLite file under an
exclusive lock `--outages` times (`--outage-seconds` each) while spans stream in; collect spools meanwhile and drains
after; at the end the store must hold exactly `--spans` conversations.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue  # noqa: E402

QUESTIONS = REPO.parent / "shared" / "data" / "arena-hard-v0.1" / "question.jsonl"
T0 = 1_760_000_000_000_000_000
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
for _ in range(int(sys.argv[2])):
    time.sleep(float(sys.argv[4]))
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
    conn.execute("ROLLBACK")
    print("released", flush=True)
"""


def prompts() -> list[str]:
    return [orjson.loads(line)["prompt"] for line in QUESTIONS.read_bytes().splitlines()]


def kv(key: str, value) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, list):
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value])))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def body(first: int, n: int, texts: list[str]) -> bytes:
    """An ExportTraceServiceRequest of `n` GenAI chat spans numbered from `first` (ids derive from the number)."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(kv("service.name", "bench-app"))
    scope = resource.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    for i in range(first, first + n):
        text = texts[i % len(texts)]
        span = scope.spans.add()
        span.trace_id = i.to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = "chat gpt-4o-mini"
        span.kind = 3
        span.start_time_unix_nano = T0 + i * 1_000_000
        span.end_time_unix_nano = T0 + i * 1_000_000 + 800_000_000
        span.attributes.extend([
            kv("gen_ai.operation.name", "chat"), kv("gen_ai.provider.name", "openai"),
            kv("gen_ai.request.model", "gpt-4o-mini"), kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            kv("gen_ai.response.id", f"chatcmpl-{i}"), kv("gen_ai.response.finish_reasons", ["stop"]),
            kv("gen_ai.usage.input_tokens", len(text) // 4), kv("gen_ai.usage.output_tokens", 42),
            kv("gen_ai.input.messages", orjson.dumps([
                {"role": "system", "parts": [{"type": "text", "content": "You are a helpful assistant."}]},
                {"role": "user", "parts": [{"type": "text", "content": text}]}]).decode()),
            kv("gen_ai.output.messages", orjson.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": f"Answer {i}: " + text[:200]}],
                 "finish_reason": "stop"}]).decode()),
        ])
    return request.SerializeToString()


class Server:
    """`curate collect` in a process of its own, on a free port of 127.0.0.1."""

    def __init__(self, home: Path, url: str | None, *args: str):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if url:
            env["CURATE_DATABASE_URL"] = url
        self.log = home.parent / "collect.log"
        home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "curation.cli.main", "collect", "--home", str(home),
                                          "--port", "0", "--json", *args], stdout=subprocess.PIPE, stderr=err, env=env)
        deadline = time.monotonic() + 120
        while not (match := re.search(r"listening on http://([\d.]+):(\d+)", self.log.read_text())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"curate collect did not start: {self.log.read_text()}")
            time.sleep(0.05)
        self.host, self.port = match[1], int(match[2])

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def cpu(self) -> float:
        """CPU seconds the server has used (user + system), all its threads."""
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=600)
        return orjson.loads(out)


def send(conn: http.client.HTTPConnection, data: bytes) -> int:
    conn.request("POST", "/v1/traces", data, {"Content-Type": "application/x-protobuf"})
    answer = conn.getresponse()
    answer.read()
    return answer.status


def run_clients(server: Server, bodies: list[tuple[float, bytes]], threads: int) -> list[tuple[float, float, int]]:
    """Send (due time, body) pairs from `threads` keep-alive connections; (due, acknowledged, status) for each."""
    work: queue.Queue = queue.Queue()
    for item in bodies:
        work.put(item)
    done: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    start = time.perf_counter()

    def client() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        while True:
            try:
                due, data = work.get_nowait()
            except queue.Empty:
                return
            wait = start + due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            code = send(conn, data)
            while code == 429:  # the spool is full or too much waits: retry as an exporter does
                time.sleep(0.5)
                code = send(conn, data)
            with lock:
                done.append((start + due, time.perf_counter(), code))

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return done


def count_conversations(home: Path, url: str | None) -> tuple[int, int]:
    """(conversations, distinct ids) in the store."""
    from curation.store import Store

    store = Store.open(home, url)
    with store.connect() as conn:
        total, distinct = conn.exec_driver_sql("SELECT count(*), count(DISTINCT id) FROM conversations").one()
    store.dispose()
    return total, distinct


def throughput(args, home: Path) -> dict:
    texts = prompts()
    bodies = [(0.0, body(i * args.batch, args.batch, texts)) for i in range(args.batches)]
    server = Server(home, args.database_url)
    warm = body(10**12, args.batch, texts)
    run_clients(server, [(0.0, warm)], 1)
    start, cpu = time.perf_counter(), server.cpu()
    done = run_clients(server, bodies, args.threads)
    seconds, cpu = time.perf_counter() - start, server.cpu() - cpu
    summary = server.stop()
    spans = args.batches * args.batch
    assert all(code == 200 for _, _, code in done), {code for _, _, code in done}
    return {"spans": spans, "seconds": round(seconds, 2), "spans_per_s": round(spans / seconds),
            "server_cpu_us_per_span": round(cpu / spans * 1e6, 1),
            "stored": count_conversations(home, args.database_url)[0] - args.batch, "server": summary}


def latency(args, home: Path) -> dict:
    texts = prompts()
    n = int(args.rate * args.seconds)
    bodies = [(i / args.rate, body(i * args.spans, args.spans, texts)) for i in range(n)]
    server = Server(home, args.database_url)
    run_clients(server, [(0.0, body(10**12, args.spans, texts))], 1)
    cpu = server.cpu()
    done = run_clients(server, bodies, args.threads)
    cpu = server.cpu() - cpu
    server.stop()
    waits = np.array([(ack - due) * 1000 for due, ack, _ in done])
    return {"requests": n, "rate": args.rate, "spans_per_request": args.spans,
            "server_cpu_ms_per_request": round(cpu / n * 1e3, 3),
            "p50_ms": round(float(np.percentile(waits, 50)), 2), "p99_ms": round(float(np.percentile(waits, 99)), 2),
            "max_ms": round(float(waits.max()), 2), "errors": sum(code != 200 for _, _, code in done)}


def memory(args, home: Path) -> dict:
    texts = prompts()
    server = Server(home, args.database_url)
    seconds = args.minutes * 60
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not stop.wait(5):
            samples.append((time.monotonic() - start, server.rss()))

    sampler = threading.Thread(target=sample)
    sampler.start()
    numbers = itertools.count()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end:  # a steady stream: `--rate` requests/s of `--spans` new spans each
        tick = time.monotonic()
        assert send(conn, body(next(numbers) * args.spans, args.spans, texts)) == 200
        sent += 1
        time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - tick)))
    stop.set()
    sampler.join()
    server.stop()
    early = min(samples, key=lambda s: abs(s[0] - seconds * 0.2))
    late = samples[-1]
    return {"minutes": args.minutes, "requests": sent, "spans": sent * args.spans,
            "rss_mb_at_20pct": round(early[1] / 2**20, 1), "rss_mb_at_end": round(late[1] / 2**20, 1),
            "ratio": round(late[1] / early[1], 3)}


def outages(args, home: Path) -> dict:
    texts = prompts()
    per = args.batch
    n_bodies = -(-args.spans // per)  # the last request holds the rest: exactly --spans spans in all
    server = Server(home, None, "--store-timeout", "0.5")
    gap = args.gap
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(home / "curate.db"), str(args.outages),
                               str(args.outage_seconds), str(gap)], stdout=subprocess.PIPE)

    def bodies():
        for i in range(n_bodies):
            yield (0.0, body(i * per, min(per, args.spans - i * per), texts))

    start = time.perf_counter()
    done = []
    chunk = 200  # encode as we go: a million spans' bodies do not fit in memory at once
    it = iter(bodies())
    while batch := list(itertools.islice(it, chunk)):
        done += run_clients(server, batch, args.threads)
    locks = locker.communicate(timeout=3600)[0].decode().count("locked")
    summary = server.stop()
    again = Server(home, None)  # a new process drains whatever the first left in the spool
    again.stop()
    total, distinct = count_conversations(home, None)
    return {"spans": args.spans, "outages": locks, "seconds": round(time.perf_counter() - start, 1),
            "conversations": total, "distinct": distinct, "exact": total == distinct == args.spans,
            "acknowledged": sum(code == 200 for _, _, code in done), "requests": len(done),
            "spooled_requests": summary.get("spooled_requests", 0), "store_outages": summary.get("store_outages", 0),
            "left_in_spool": sorted(p.name for p in (home / "spool").glob("collect-*"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["throughput", "latency", "memory", "outages"])
    parser.add_argument("--batches", type=int, default=40, help="throughput: requests sent")
    parser.add_argument("--batch", type=int, default=512, help="spans per request (throughput, outages)")
    parser.add_argument("--threads", type=int, default=4, help="client connections")
    parser.add_argument("--rate", type=float, default=500, help="latency, memory: requests per second")
    parser.add_argument("--seconds", type=float, default=30, help="latency: how long")
    parser.add_argument("--spans", type=int, default=None,
                        help="latency/memory: spans per request (default 1); outages: spans in all (default 100,000)")
    parser.add_argument("--minutes", type=float, default=10, help="memory: how long")
    parser.add_argument("--outages", type=int, default=10, help="outages: how many times the store is locked")
    parser.add_argument("--outage-seconds", type=float, default=3, help="outages: how long each lock lasts")
    parser.add_argument("--gap", type=float, default=3, help="outages: seconds of store between two locks")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL store instead of SQLite (not for outages)")
    args = parser.parse_args()
    if args.spans is None:
        args.spans = 100_000 if args.mode == "outages" else 1
    with tempfile.TemporaryDirectory(prefix="curate-collect-bench-") as tmp:
        result = globals()[args.mode](args, Path(tmp) / "home")
    print(orjson.dumps({"mode": args.mode, **result, "load_average": os.getloadavg()},
                       option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
