"""`curate generate` throughput and the pairs it brings, each against a baseline measured in the same run.

    .venv/bin/python benchmarks/generate_throughput.py [--requests 800] [--concurrency 16] [--delay 0.2]
                                                       [--traffic 1000] [--route 100] [--skip-pairs]

1. Throughput: a local chat server in a process of its own (tests/chat_fault_server.py) answers each request after
   `--delay` seconds. `Generator.generate` writes `--requests` candidates at `--concurrency`; the figures are
   requests/s and this process's CPU per request (all threads: HTTP, retries' bookkeeping, the store's writes).
   Baselines: the ideal (concurrency / delay) and the bare client, the same number of requests sent by `--concurrency`
   threads through one `httpx.Client` with nothing else done.
2. Pairs: the sample traffic (`curation.synthetic.write_jsonl`, no regenerated siblings) with failure signals scored;
   `--route` conversations pushed as `--pairs` into the embedded Argilla server, with one generated candidate each
   (the same local server), rated by the simulated annotators through the Argilla API (loops/simulate.py:
   3 annotators, 2 per record), pulled and exported. Two choices of the routed conversations: "failures", the first
   `--route` whose last answer failed (the sample's planted truth) and that have no sibling, which isolates what
   generation adds; and "by_score", the `--route` highest failure scores, as routing would choose (some are not
   failures, and some have a sibling: the sample repeats a few questions word for word). Baseline for each: the
   same without generation, in a home of its own. The simulated annotators judge by the planted failure and take a
   generated candidate for a good answer, so this measures the plumbing, not the candidates' quality.
Prints one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def chat_server(delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "chat_fault_server.py"), "--port", "0",
                             "--delay", str(delay)], stdout=subprocess.PIPE)
    return proc, proc.stdout.readline().decode().strip()


def bare_client(url: str, n: int, concurrency: int) -> dict:
    """The baseline: `n` chat requests from `concurrency` threads through one httpx client, nothing else."""
    import httpx

    client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
    body = {"model": "bench", "messages": [{"role": "user", "content": "How do I grow basil?"}], "max_tokens": 64}
    counter = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            client.post(url + "/chat/completions", json=body).raise_for_status()

    cpu, wall = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    client.close()
    return {"requests": n, "seconds": round(wall, 2), "requests_per_s": round(n / wall, 1),
            "cpu_ms_per_request": round(1000 * cpu / n, 3)}


def throughput(n: int, concurrency: int, delay: float) -> dict:
    from annotations.generate import Endpoint, GenerateSettings, Generator
    from curation.ingest import ingest_records
    from curation.synthetic import generate as sample
    from curation.store import Store

    proc, url = chat_server(delay)
    try:
        with tempfile.TemporaryDirectory() as home:
            store = Store.open(home)
            ingest_records(store, sample(n, seed=1))
            with store.connect() as conn:
                ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM conversations ORDER BY id")]
            settings = GenerateSettings(endpoints=[Endpoint(url=url, model="bench")], concurrency=concurrency)
            baseline = bare_client(url, len(ids), concurrency)
            cpu, wall = time.process_time(), time.perf_counter()
            result = Generator(settings).generate(store, ids, progress=False)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            store.dispose()
    finally:
        proc.kill()
        proc.wait()
    return {
        "server_delay_s": delay, "concurrency": concurrency,
        "ideal_requests_per_s": round(concurrency / delay, 1),
        "bare_client": baseline,
        "curate_generate": {"requests": result["requests"], "generated": result["generated"], "failed": result["failed"],
                            "seconds": round(wall, 2), "requests_per_s": round(result["requests"] / wall, 1),
                            "cpu_ms_per_request": round(1000 * cpu / max(1, result["requests"]), 3)},
    }


def pairs(n_traffic: int, route: int, url: str, server, generate: bool, choose: str) -> dict:
    from annotations.generate import Endpoint, GenerateSettings, Generator
    from annotations.pull import pull
    from annotations.push import push
    from curation.messages import context_key
    from annotations.tables import annotation_records
    from curation.errors import CurateError
    from curation.ingest import ingest
    from curation.synthetic import write_jsonl
    from curation.signals import score_failures
    from curation.store import Store, loads
    from curation.store.failure_tables import failure_scores
    from curation.store.tables import conversations
    from loops.export import PairRules, export_preferences
    from loops.simulate import simulate

    import sqlalchemy as sa

    with tempfile.TemporaryDirectory() as home:
        store = Store.open(home)
        ingest(store, [write_jsonl(Path(home) / "traffic.jsonl", n_traffic, seed=0)], progress=False)
        score_failures(store, progress=False)
        with store.connect() as conn:
            rows = conn.execute(sa.select(conversations.c.id, conversations.c.messages, conversations.c.metadata)
                                .order_by(conversations.c.id)).all()
            by_score = conn.execute(sa.select(failure_scores.c.conversation_id).order_by(
                failure_scores.c.failure_score.desc(), failure_scores.c.conversation_id).limit(route)).scalars().all()
        truth = {cid: (loads(meta) or {}).get("demo_truth", {}).get("last_answer_failure") for cid, _, meta in rows}
        contexts = Counter(context_key(loads(m)) for _, m, _ in rows)
        lonely_failures = [cid for cid, m, _ in rows if truth[cid] and contexts[context_key(loads(m))] == 1]
        top = lonely_failures[:route] if choose == "failures" else by_score
        dataset = f"bench-pairs-{choose}-{'gen' if generate else 'plain'}"
        generator = Generator(GenerateSettings(endpoints=[Endpoint(url=url, model="bench")], concurrency=16)) if generate else None
        t0 = time.perf_counter()
        pushed = push(store, dataset, ids=top, pairs=True, generator=generator, progress=False)
        push_s = time.perf_counter() - t0
        simulated = simulate(store, server.url, server.api_key, dataset, "argilla")
        pulled = pull(store, dataset, progress=False)
        try:
            exported = export_preferences(store, Path(home) / "export", fmt="jsonl", rules=PairRules(test_size=0.0))
            rows = [orjson.loads(line) for line in (Path(home) / "export" / "train.jsonl").read_bytes().splitlines()]
        except CurateError as exc:  # no pairs at all is a result here, not an error
            exported, rows = {"pairs": 0, "error": str(exc)[:120]}, []
        with store.connect() as conn:
            two = conn.execute(sa.select(sa.func.count()).select_from(annotation_records).where(
                annotation_records.c.dataset == dataset, annotation_records.c.conversation_id_b.is_not(None))).scalar_one()
        store.dispose()
    return {"routed": len(top), "truly_failed": sum(1 for c in top if truth.get(c)), "pushed": pushed["pushed"],
            "two_response_records": two,
            "generated": pushed["generated"], "generation_failed": pushed["generation_failed"],
            "push_seconds": round(push_s, 2), "responses": simulated["responses"], "pulled": pulled["pulled"],
            "pairs": exported["pairs"], "pairs_by_rule": dict(Counter(r["rule"] for r in rows))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--traffic", type=int, default=1_000)
    parser.add_argument("--route", type=int, default=100)
    parser.add_argument("--skip-pairs", action="store_true")
    args = parser.parse_args()
    figures = {"throughput": throughput(args.requests, args.concurrency, args.delay)}
    print(orjson.dumps(figures).decode(), file=sys.stderr, flush=True)
    if not args.skip_pairs:
        from annotations.server import start_background

        with tempfile.TemporaryDirectory() as argilla_home:
            server = start_background(Path(argilla_home))
            os.environ["ARGILLA_API_URL"], os.environ["ARGILLA_API_KEY"] = server.url, server.api_key
            proc, url = chat_server(0.0)
            try:
                for choose in ("failures", "by_score"):
                    figures[f"pairs_{choose}"] = {
                        "without_generation": pairs(args.traffic, args.route, url, server, False, choose),
                        "with_generation": pairs(args.traffic, args.route, url, server, True, choose)}
            finally:
                proc.kill()
                server.stop()
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
