"""The embedded Argilla server at scale: the web UI's requests against 100,000 records in one dataset.

    .venv/bin/python benchmarks/server_queue.py [--records 100000] [--baseline 1000] [--repeat 30]

Two datasets in the HelpSteer2 template: a small baseline one and a big one. Records carry real oasst1 texts
(cycled), a 384-d unit vector, five suggestions and the template's metadata. Records are written straight into
argilla-server's SQLite database (the API path is the push benchmark's subject), then the server is restarted, so
the figures include rebuilding the in-process index from the database. Measured, as an annotator through HTTP:
the pending-queue page the UI asks for (exactly its request), the same with a failure-score range filter,
"Find similar", and the queue right after a submitted response. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from annotations.template import ATTRIBUTES

OASST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "oasst1-en-validation" / "oasst1-en-validation.jsonl"
PENDING = [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
           {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]}]


def oasst_pairs() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in OASST.read_text(encoding="utf-8").splitlines()]
    by_id = {r["message_id"]: r for r in rows}
    return [(by_id[r["parent_id"]]["text"], r["text"]) for r in rows if r["role"] == "assistant" and r["parent_id"] in by_id]


def create_dataset(handle, name: str) -> str:
    import argilla as rg

    from annotations.template import build_settings, template

    client = rg.Argilla(api_url=handle.url, api_key=handle.api_key)
    dataset = rg.Dataset(name=name, settings=build_settings(template(min_submitted=1, dimensions=384)),
                         workspace="argilla", client=client).create()
    return str(dataset.id)


def fill(db_path: Path, dataset_id: str, n: int, pairs: list[tuple[str, str]], seed: int) -> None:
    """Insert n records with vectors and five suggestions each, in argilla-server's own schema."""
    db = sqlite3.connect(db_path)
    hexid = uuid.UUID(dataset_id).hex
    questions = dict(db.execute("SELECT name, id FROM questions WHERE dataset_id = ?", (hexid,)).fetchall())
    (vector_settings_id,) = db.execute("SELECT id FROM vectors_settings WHERE dataset_id = ?", (hexid,)).fetchone()
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1)
    for chunk in range(0, n, 10_000):
        size = min(10_000, n - chunk)
        vectors = rng.normal(size=(size, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = rng.random(size)
        records, vector_rows, suggestion_rows = [], [], []
        for j in range(size):
            i = chunk + j
            rid = uuid.uuid4().hex
            stamp = str(start + timedelta(microseconds=i))
            prompt, reply = pairs[i % len(pairs)]
            fields = {"conversation": [{"role": "user", "content": prompt}], "response": reply}
            metadata = {"failure_score": float(scores[j]), "cluster_id": int(i % 50), "cluster_label": f"topic {i % 50}",
                        "strategy": "failure", "model": "demo-model", "date": "2026-01-01"}
            records.append((rid, orjson.dumps(fields).decode(), f"conv-{seed}-{i}", hexid, stamp, stamp,
                            orjson.dumps(metadata).decode(), "pending"))
            vector_rows.append((orjson.dumps(vectors[j].tolist()).decode(), rid, vector_settings_id, uuid.uuid4().hex, stamp, stamp))
            for k, name in enumerate(ATTRIBUTES):
                suggestion_rows.append((uuid.uuid4().hex, str((i + k) % 5), None, "rm-bench", None, rid, questions[name], stamp, stamp))
        db.executemany("INSERT INTO records (id, fields, external_id, dataset_id, inserted_at, updated_at, metadata, status) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records)
        db.executemany("INSERT INTO vectors (value, record_id, vector_settings_id, id, inserted_at, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", vector_rows)
        db.executemany("INSERT INTO suggestions (id, value, score, agent, type, record_id, question_id, inserted_at, updated_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", suggestion_rows)
        db.commit()
    db.close()


def timed(client: httpx.Client, method: str, path: str, repeat: int, **kwargs) -> dict:
    client.request(method, path, **kwargs).raise_for_status()  # warm-up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 1), "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 1),
            "p99_ms": round(samples[int(0.99 * (len(samples) - 1))], 1)}


def measure(url: str, headers: dict, dataset_id: str, repeat: int) -> dict:
    search = f"/api/v1/me/datasets/{dataset_id}/records/search?include=responses&include=suggestions&offset=0&limit=10"
    band = {"type": "range", "scope": {"entity": "metadata", "metadata_property": "failure_score"}, "ge": 0.3, "le": 0.6}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        queue = client.post(search, json={"query": {}, "filters": {"and": PENDING}}).json()
        top = queue["items"][0]["record"]
        out = {
            "queue_total": queue["total"],
            "queue_top_failure_score": round(top["metadata"]["failure_score"], 4),
            "pending_queue": timed(client, "POST", search, repeat, json={"query": {}, "filters": {"and": PENDING}}),
            "metadata_filter": timed(client, "POST", search, repeat, json={"query": {}, "filters": {"and": PENDING + [band]}}),
            "find_similar": timed(client, "POST", search, repeat, json={
                "query": {"vector": {"name": "conversation_embedding", "record_id": top["id"], "order": "most_similar"}},
                "filters": {"and": PENDING}}),
            "text_search": timed(client, "POST", search, max(3, repeat // 10), json={"query": {"text": {"q": "python code"}}, "filters": {"and": PENDING}}),
        }
        client.post(f"/api/v1/records/{top['id']}/responses",
                    json={"values": {a: {"value": 2} for a in ATTRIBUTES}, "status": "submitted"}).raise_for_status()
        out["pending_queue_after_submit"] = timed(client, "POST", search, repeat, json={"query": {}, "filters": {"and": PENDING}})
        out["queue_total_after_submit"] = client.post(search, json={"query": {}, "filters": {"and": PENDING}}).json()["total"]
    return out


def existing(db_path: Path) -> tuple[str, str] | None:
    if not db_path.exists():
        return None
    with sqlite3.connect(db_path) as db:
        names = dict(db.execute("SELECT name, id FROM datasets WHERE name LIKE 'bench-%'").fetchall())
    if {"bench-small", "bench-big"} <= set(names):
        return str(uuid.UUID(names["bench-small"])), str(uuid.UUID(names["bench-big"]))
    return None


def rss_mb(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024), "peak_rss_mb": round(int(status["VmHWM"].split()[0]) / 1024)}


def login(url: str, username: str, password: str) -> dict:
    token = httpx.post(f"{url}/api/v1/token", data={"username": username, "password": password}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--home", default=None, help="Curate home to use (default: a fresh temporary folder)")
    args = parser.parse_args()

    from annotations.server import add_user, start_background

    home = Path(args.home or tempfile.mkdtemp(prefix="curate-server-bench-"))
    db_path = home / "argilla" / "argilla.db"
    found = existing(db_path)
    insert_s = None
    if found:  # a home filled by an earlier run (--home): measure again without refilling
        small, big = found
    else:
        pairs = oasst_pairs()
        with start_background(home) as handle:
            small, big = create_dataset(handle, "bench-small"), create_dataset(handle, "bench-big")
        started = time.perf_counter()
        fill(db_path, small, args.baseline, pairs, seed=1)
        fill(db_path, big, args.records, pairs, seed=2)
        insert_s = round(time.perf_counter() - started, 1)
        add_user(home, "bench-annotator", "annotator", "bench-password")

    started = time.perf_counter()
    with start_background(home, ready_timeout=3600) as handle:
        ready_s = time.perf_counter() - started
        memory_idle = rss_mb(handle.process.pid)
        headers = login(handle.url, "bench-annotator", "bench-password")
        baseline = measure(handle.url, headers, small, args.repeat)
        scaled = measure(handle.url, headers, big, args.repeat)
        memory = rss_mb(handle.process.pid)

    ratio = {k: round(scaled[k]["median_ms"] / baseline[k]["median_ms"], 2)
             for k in ("pending_queue", "metadata_filter", "find_similar", "pending_queue_after_submit")}
    print(orjson.dumps({
        "records": args.records if insert_s is not None else "as filled earlier", "baseline_records": args.baseline, "repeat": args.repeat,
        "db_insert_s": insert_s, "restart_and_index_rebuild_s": round(ready_s, 1),
        "server_memory_after_rebuild": memory_idle, "server_memory_after_requests": memory,
        "baseline": baseline, "scaled": scaled, "median_ratio_scaled_over_baseline": ratio,
        "targets": {"pending_queue_ms": 150, "metadata_filter_ms": 150, "rss_mb": 2048},
        "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
    }, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
