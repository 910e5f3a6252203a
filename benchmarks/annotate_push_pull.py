"""Push and pull throughput into a fresh embedded Argilla server, against the SDK's default `records.log`.

    .venv/bin/python benchmarks/annotate_push_pull.py [--records 10000] [--baseline 1000] [--rated 3000] [--stock 10000]

Records carry 384-d vectors, five suggestions and the template's metadata, as `curate annotate push` sends them.
The conversations are the sample traffic generator's (deterministic); vectors are seeded random unit vectors (the
payload size is what matters here, not the values). Prints one JSON object with the figures.

Besides `curate annotate push`/`pull` against the embedded server as shipped, the same run measures the baselines:
the SDK's `records.log` into the same server; pull through a stock server's records listing (what pull does
against a team's own Argilla); and with `--stock N`, push into a second server whose direct bulk path is off
(`CURATE_ANNOTATE_DIRECT_BULK=0`: argilla-server 2.8.0's own bulk upsert).
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

from annotations.template import ATTRIBUTES


def prepare(store, n: int) -> None:
    from curation.embed.vectors import ensure_space, write_vectors
    from curation.ingest import ingest_records
    from curation.synthetic import generate
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

    from annotations.push import ensure_dataset
    from annotations.record_builder import RecordBuilder
    from annotations.routing import Pick
    from annotations.pii import Redactor
    from annotations.template import template

    settings = template()
    dataset_id, question_ids = ensure_dataset(conn, "bench-baseline", "argilla", settings)
    dataset = conn.client.datasets(name="bench-baseline", workspace="argilla")
    builder = RecordBuilder(store, Redactor(), question_ids, "bench|thread|torch")
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


def pull_through_listing(store, dataset: str, conn) -> dict:
    """Forget what was pulled, then pull again through the records listing only (a stock server's path)."""
    import annotations.pull as pull_module
    from annotations.tables import annotation_sync, rating_responses, ratings

    with store.begin() as c:
        for table in (rating_responses, ratings, annotation_sync):
            c.execute(table.delete().where(table.c.dataset == dataset))
    listing_only = pull_module._pages
    pull_module._pages = lambda conn, dataset_id, since: pull_module._record_pages(conn, dataset_id)
    try:
        t, cpu = time.perf_counter(), time.process_time()
        result = pull_module.pull(store, dataset, connection=conn, progress=False)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    finally:
        pull_module._pages = listing_only
    return {"responses": result["responses"], "seconds": round(seconds, 2),
            "responses_per_s": round(result["responses"] / seconds, 1),
            "client_cpu_ms_per_response": round(cpu * 1000 / max(result["responses"], 1), 3)}


def stock_push(tmp: Path, n: int) -> dict:
    """Push n records from a store of their own (a store routes a conversation once) into a second server that
    runs argilla-server's own bulk upsert (direct path off)."""
    from annotations.client import connect
    from annotations.push import push
    from annotations.server import start_background
    from curation.store import Store

    store = Store.open(tmp / "curate-stock")
    prepare(store, n)

    os.environ["CURATE_ANNOTATE_DIRECT_BULK"] = "0"
    try:
        server = start_background(tmp / "argilla-stock", api_key="bench.key." + os.urandom(6).hex())
    finally:
        del os.environ["CURATE_ANNOTATE_DIRECT_BULK"]
    try:
        conn = connect(server.url, server.api_key)
        t, cpu, server_cpu = time.perf_counter(), time.process_time(), _cpu(server)
        result = push(store, "bench-stock", budget=n, connection=conn, progress=False)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        return {"records": result["pushed"], "seconds": round(seconds, 1), "records_per_s": round(result["pushed"] / seconds, 1),
                "client_cpu_ms_per_record": round(cpu * 1000 / result["pushed"], 2),
                "server_cpu_ms_per_record": round((_cpu(server) - server_cpu) * 1000 / result["pushed"], 2)}
    finally:
        server.stop()


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
    parser.add_argument("--stock", type=int, default=0, help="records to push into a server without the direct bulk path (0 = skip)")
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
            t, server_cpu = time.perf_counter(), _cpu(server)
            figures["pull_through_records_listing"] = pull_through_listing(store, "bench", conn)
            figures["pull_through_records_listing"]["server_cpu_ms_per_response"] = round(
                (_cpu(server) - server_cpu) * 1000 / max(figures["pull_through_records_listing"]["responses"], 1), 3)
        finally:
            server.stop()
        if args.stock:
            print(orjson.dumps(figures).decode(), flush=True)  # what is measured so far, should the rest fail
            figures["push_stock_bulk"] = stock_push(Path(tmp), args.stock)
    figures["client_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["load_after"] = os.getloadavg()[0]
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
