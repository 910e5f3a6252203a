"""Push and pull throughput into a fresh embedded Argilla server, against the SDK's default `records.log`.

    .venv/bin/python benchmarks/annotate_push_pull.py [--records 10000] [--baseline 1000] [--rated 3000]

Records carry 384-d vectors, five suggestions and the template's metadata, as `curate annotate push` sends them.
The conversations are the sample traffic generator's (deterministic); vectors are seeded random unit vectors (the
payload size is what matters here, not the values). Prints one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def prepare(store, n: int) -> None:
    from curation.embed.vectors import ensure_space, write_vectors
    from curation.ingest import ingest_records
    from curation.sample import generate
    from curation.signals import score_failures
    from curation.store import dumps, utcnow
    from curation.store.failure_tables import cluster_assignments, clusters, rewards

    ingest_records(store, generate(n, seed=0))
    score_failures(store, progress=False)
    with store.connect() as conn:
        ids = sorted(r[0] for r in conn.exec_driver_sql("SELECT id FROM conversations"))
    run = store.start_run("bench-setup")
    rng = random.Random(0)
    with store.begin() as conn:
        conn.execute(clusters.insert(), [{"id": k, "label": f"topic {k}", "size": 0} for k in range(20)])
        conn.execute(cluster_assignments.insert(), [
            {"conversation_id": c, "cluster_id": i % 20, "run_id": run, "novel": int(i % 50 == 0)} for i, c in enumerate(ids)])
        conn.execute(rewards.insert(), [
            {"conversation_id": c, "model_version": "rm-bench", "reward": 0.0, "scored_at": utcnow(), "run_id": run,
             "attributes": dumps({a: rng.uniform(0, 4) for a in ATTRIBUTES})} for c in ids])
    space = ensure_space(store, "bench|thread|torch", "bench", "thread", "torch", 384, run)
    matrix = np.random.default_rng(0).normal(size=(len(ids), 384)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    write_vectors(store, space, [(c, c, v) for c, v in zip(ids, matrix)], run)


def baseline_sdk_log(conn, store, n: int) -> float:
    """The SDK's default path: rg.Record objects through `dataset.records.log` (same fields, vectors, suggestions)."""
    import argilla as rg

    from annotations.push import _RecordBuilder, ensure_dataset
    from annotations.routing import Pick
    from annotations.pii import Redactor
    from annotations.template import template

    settings = template()
    dataset_id, question_ids = ensure_dataset(conn, "bench-baseline", "argilla", settings)
    dataset = conn.client.datasets(name="bench-baseline", workspace="argilla")
    builder = _RecordBuilder(store, Redactor(), question_ids, "bench|thread|torch")
    with store.connect() as c:
        ids = [r[0] for r in c.exec_driver_sql(f"SELECT id FROM conversations ORDER BY id DESC LIMIT {n}")]
    items, _ = builder.build([Pick(i, 0.0, "random") for i in ids])
    start, cpu = time.perf_counter(), time.process_time()
    records = [
        rg.Record(
            id=item["external_id"], fields=item["fields"], metadata=item["metadata"],
            vectors={k: [float(x) for x in v] for k, v in item.get("vectors", {}).items()},
            suggestions=[rg.Suggestion(question_name=name, value=s["value"], agent=s["agent"])
                         for name, s in zip(ATTRIBUTES, item.get("suggestions", []))],
        )
        for item in items
    ]
    dataset.records.log(records)
    return len(records) / (time.perf_counter() - start), (time.process_time() - cpu) * 1000 / len(records)


def seed_responses(conn, dataset: str, n_records: int) -> int:
    """Three annotators submit on `n_records` records, through the owner's bulk upsert (as a UI session would store them)."""
    import argilla as rg

    workspace = conn.client.workspaces("argilla")
    users = []
    for name in ("ann", "bob", "cy"):
        user = rg.User(username=name, password="bench-" + name * 4, role="annotator", client=conn.client).create()
        user.add_to_workspace(workspace)
        users.append(str(user.id))
    found = conn.client.datasets(name=dataset, workspace="argilla")
    rng = random.Random(1)
    ids, offset = [], 0
    while len(ids) < n_records:
        page = conn.request("GET", f"/api/v1/datasets/{found.id}/records", params={"offset": offset, "limit": 1000})["items"]
        if not page:
            break
        ids += [r["external_id"] for r in page]
        offset += len(page)
    ids = ids[:n_records]
    for start in range(0, len(ids), 250):
        items = [{"external_id": e, "responses": [
            {"user_id": u, "status": "submitted", "values": {a: {"value": rng.randint(0, 4)} for a in ATTRIBUTES}}
            for u in users]} for e in ids[start : start + 250]]
        conn.request("PUT", f"/api/v1/datasets/{found.id}/records/bulk", json={"items": items})
    return len(ids) * len(users)


def _cpu(server) -> float:
    """CPU seconds the server process used so far: a figure that does not depend on how busy the machine is."""
    import psutil

    times = psutil.Process(server.process.pid).cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=1_000, help="records for the SDK records.log baseline (0 = skip)")
    parser.add_argument("--rated", type=int, default=3_000, help="records that get 3 submitted responses each for pull")
    args = parser.parse_args()

    from annotations.client import connect
    from annotations.pull import pull
    from annotations.push import push
    from annotations.server import start_background
    from curation.store import Store

    figures: dict = {"records": args.records, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "curate")
        t = time.perf_counter()
        prepare(store, args.records)
        figures["prepare_s"] = round(time.perf_counter() - t, 1)
        server = start_background(Path(tmp) / "argilla", api_key="bench.key." + os.urandom(6).hex())
        try:
            conn = connect(server.url, server.api_key)
            t, cpu, server_cpu = time.perf_counter(), time.process_time(), _cpu(server)
            result = push(store, "bench", budget=args.records, connection=conn, progress=False)
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
            server_ms = (_cpu(server) - server_cpu) * 1000 / result["pushed"]
            figures["push"] = {"records": result["pushed"], "seconds": round(seconds, 1),
                               "records_per_s": round(result["pushed"] / seconds, 1),
                               "client_cpu_ms_per_record": round(cpu * 1000 / result["pushed"], 2),
                               "server_cpu_ms_per_record": round(server_ms, 2)}
            if args.baseline:
                rate, cpu_ms = baseline_sdk_log(conn, store, args.baseline)
                figures["baseline_sdk_records_log"] = {"records": args.baseline, "records_per_s": round(rate, 1),
                                                       "client_cpu_ms_per_record": round(cpu_ms, 2)}
                figures["push_speedup_vs_sdk"] = round(figures["push"]["records_per_s"] / figures["baseline_sdk_records_log"]["records_per_s"], 2)
            seeded = seed_responses(conn, "bench", min(args.rated, args.records))
            t, cpu, server_cpu = time.perf_counter(), time.process_time(), _cpu(server)
            pulled = pull(store, "bench", connection=conn, progress=False)
            seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
            figures["pull_server_cpu_ms_per_response"] = round((_cpu(server) - server_cpu) * 1000 / max(pulled["responses"], 1), 3)
            figures["pull"] = {"responses": pulled["responses"], "seeded": seeded, "seconds": round(seconds, 2),
                               "responses_per_s": round(pulled["responses"] / seconds, 1),
                               "client_cpu_ms_per_response": round(cpu * 1000 / max(pulled["responses"], 1), 3)}
            t = time.perf_counter()
            again = pull(store, "bench", connection=conn, progress=False)
            figures["pull_again_noop_s"] = round(time.perf_counter() - t, 2)
            assert again["responses"] == 0
        finally:
            server.stop()
    figures["client_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["load_after"] = os.getloadavg()[0]
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
