"""`--engine ray` against the local path on the same PostgreSQL server, same backend, same run.

    .venv/bin/python benchmarks/ray_engine.py --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres
    .venv/bin/python benchmarks/ray_engine.py --database-url URL --embed 20000 --score 1000000

(a) embed: `curate embed --threads 2` (local) and `curate embed --engine ray` on a Ray cluster started here on this
    machine (a head without CPUs and 2 worker nodes of 1 CPU each, one actor with 1 thread per node), each into its
    own fresh database holding the same generated conversations, same backend (--backend, default openvino); the
    int8 export is made by a warm-up beforehand so that neither timed run calibrates. Prints conversations/s and
    the ratio ray / local (target ≥ 0.85).
(b) failure scoring of `--score` conversations (generated, with feedback and one reward each, bulk-inserted) with
    --engine ray: the driver's peak RSS (target ≤ 1 GB, not growing with the store) and conversations/s; with
    --local-score, the local path's peak RSS and conversations/s too.
Each run is a subprocess; peak RSS is the largest RSS of that process and its children, sampled every 50 ms (the
Ray workers are children of the Ray nodes, not of the driver, so they are not in it). Fresh databases are created on
the server of --database-url and dropped afterwards. Run it under `flock /tmp/curate-bench.lock` on a shared machine.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psutil
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
SCORE = ("import sys, orjson; from curation.store import Store; from curation.signals import score_failures; "
         "print(orjson.dumps(score_failures(Store.open(), engine=sys.argv[1], address=sys.argv[2] or None, "
         "progress=False)).decode())")


@contextlib.contextmanager
def fresh_database(server: str):
    """A new database on the server of `server` (a URL), dropped afterwards; yields its URL."""
    name = f"curate_ray_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


def measured(cmd: list[str], env: dict) -> tuple[dict, float, float]:
    """(the command's JSON, seconds, peak RSS in MiB of it and its children)."""
    started = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {err.decode()[-800:]}")
    return orjson.loads(out.splitlines()[-1]), seconds, peak / 2**20


def curate_env(home: Path, url: str) -> dict:
    return {**os.environ, "CURATE_HOME": str(home), "CURATE_DATABASE_URL": url, "HF_HUB_OFFLINE": "1"}


def insert_generated(url: str, n: int, seed: int = 0, rewards: bool = False) -> None:
    """Generated conversations (and their feedback; with `rewards`, one reward each) straight into the store, in
    bulk: the setup of a large store, not what is measured."""
    from curation.synthetic import generate
    from curation.store import Store, dumps, insert_tuples, utcnow
    from curation.store.failure_tables import rewards as rewards_table
    from curation.store.tables import conversations, feedback

    store = Store.open(tempfile.mkdtemp(prefix="curate-bench-"), url=url)
    now, batch = utcnow(), []
    with store.bulk_connection() as conn:
        def flush():
            convs = [(r["id"], dumps(r["messages"]), len(r["messages"]), now, "bench") for r in batch]
            events = [(hashlib.sha256(f"{r['id']}{i}".encode()).hexdigest(), r["id"], f["type"],
                       dumps(f.get("value")), f.get("turn"), now) for r in batch for i, f in enumerate(r["feedback"])]
            with conn.begin():
                insert_tuples(conn, conversations, ("id", "messages", "n_messages", "ingested_at", "source"), convs)
                insert_tuples(conn, feedback, ("id", "conversation_id", "type", "value", "turn", "at"), events)
                if rewards:  # a reward that depends on the reply, with ties, as a real model's would not avoid
                    scored = [(r["id"], "bench-rm", round(len(r["messages"][-1]["content"]) % 97 / 97, 3), now)
                              for r in batch]
                    insert_tuples(conn, rewards_table, ("conversation_id", "model_version", "reward", "scored_at"),
                                  scored)
            batch.clear()

        for record in generate(n, seed=seed):
            batch.append(record)
            if len(batch) == 20_000:
                flush()
        flush()
    store.dispose()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ray_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def bench_embed(server: str, n: int, backend: str, cluster) -> None:
    curate = [sys.executable, "-m", "curation.cli.main"]
    with tempfile.TemporaryDirectory(prefix="curate-ray-bench-") as tmp:
        tmp = Path(tmp)
        with fresh_database(server) as url:  # warm-up: the int8 export, made once for both timed runs
            insert_generated(url, 300, seed=1)
            measured([*curate, "embed", "--backend", backend, "--json"], curate_env(tmp / "warm", url))
        figures = {}
        for engine in ("local", "ray"):
            with fresh_database(server) as url:
                insert_generated(url, n)
                args = ["--threads", "2"] if engine == "local" else ["--engine", "ray", "--ray-address", cluster.address]
                before = loadavg()
                out, seconds, rss = measured([*curate, "embed", "--backend", backend, *args, "--json"],
                                             curate_env(tmp / engine, url))
                assert out["embedded"] == n, out
                figures[engine] = n / seconds
                print(f"embed {engine:5}: {n:,} conversations in {seconds:.1f} s = {n / seconds:.1f} conv/s "
                      f"({out.get('workers', 1)} worker(s), driver peak RSS {rss:.0f} MiB; load {before} -> {loadavg()})",
                      flush=True)
        print(f"embed ray / local throughput: {figures['ray'] / figures['local']:.3f} (target >= 0.85)")


def bench_score(server: str, n: int, cluster, local: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="curate-ray-bench-") as tmp, fresh_database(server) as url:
        started = time.perf_counter()
        insert_generated(url, n, rewards=True)
        print(f"setup: {n:,} conversations with feedback and rewards inserted in {time.perf_counter() - started:.0f} s",
              flush=True)
        for engine in ("ray", "local") if local else ("ray",):
            before = loadavg()
            address = cluster.address if engine == "ray" else ""
            out, seconds, rss = measured([sys.executable, "-c", SCORE, engine, address], curate_env(Path(tmp), url))
            assert out["scored"] == n, out
            print(f"failure scoring {engine:5}: {n:,} conversations in {seconds:.1f} s = {n / seconds:,.0f} conv/s, "
                  f"driver peak RSS {rss:.0f} MiB ({out.get('workers', 1)} worker(s), {out['failures']:,} failures; "
                  f"load {before} -> {loadavg()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server URL (fresh databases are made there)")
    parser.add_argument("--embed", type=int, default=20_000, help="conversations embedded by each engine (0 = skip)")
    parser.add_argument("--score", type=int, default=1_000_000, help="conversations failure-scored (0 = skip)")
    parser.add_argument("--backend", default="openvino", choices=("torch", "onnx", "openvino"))
    parser.add_argument("--local-score", action="store_true", help="also failure-score with the local path")
    args = parser.parse_args()
    os.environ.setdefault("CURATE_CACHE_DIR", tempfile.mkdtemp(prefix="curate-ray-bench-cache-"))
    cluster = ray_cluster()
    try:
        if args.embed:
            bench_embed(args.database_url, args.embed, args.backend, cluster)
        if args.score:
            bench_score(args.database_url, args.score, cluster, args.local_score)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
