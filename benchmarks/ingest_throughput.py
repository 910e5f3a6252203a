"""Ingest throughput and peak memory: generated JSONL (3 user turns each) → the store, beside the raw floor.

    .venv/bin/python benchmarks/ingest_throughput.py --n 1000000
    .venv/bin/python benchmarks/ingest_throughput.py --n 1000000 --database-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres

Each configuration runs in a fresh home as a subprocess; on PostgreSQL also in a fresh database that it creates on
the server of `--database-url` and drops afterwards (the URL's own database only serves to create it). Peak RSS is
the largest sum of RSS over the process and its workers, sampled every 50 ms, and CPU time is theirs (user +
system). The PostgreSQL server's CPU time is printed apart: that of all its processes during the run, so it includes
whatever else the server did meanwhile. Configurations, all on the same file in the same run:
- floor: orjson-parse every line and insert the same conversation and feedback rows in the same batches, with no
  validation, ids, timestamps, hashing or accounting: what the parser and the database cost by themselves (on
  PostgreSQL through COPY, as ingest does; with `--inserts`, also through multi-row INSERTs, the path before COPY);
- curate: `curate ingest FILE --json`, the default settings;
- with `--workers 2`, also `CURATE_INGEST_WORKERS=2` (validation in worker processes).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import orjson
import psutil

BATCH = 10_000  # the default ingest batch, so the floor commits as often as curate does


def run(cmd: list[str], env: dict) -> tuple[dict, float, float, float]:
    started = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak, cpu = 0, {}
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
            for p in tree:
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[2:4]} failed: {out[-500:]!r}")
    return orjson.loads(out.splitlines()[-1]), seconds, peak / 2**20, sum(cpu.values())


def floor(path: str, copy: bool = True) -> None:
    """The raw floor (run in its own process): parse, then insert the rows as they are, one transaction per batch;
    without `copy`, PostgreSQL gets multi-row INSERTs as before COPY (`insert_tuples` below COPY_MIN_ROWS)."""
    import curation.store
    from curation.ingest import COLUMNS, FB_COLUMNS
    from curation.store import Store, insert_tuples, utcnow
    from curation.store.tables import conversations, feedback

    if not copy:
        curation.store.COPY_MIN_ROWS = 1 << 62

    store = Store.open()
    dumps, loads = orjson.dumps, orjson.loads
    rows, fb, n = [], [], 0
    with store.bulk_connection() as conn:
        def write() -> None:
            with conn.begin():
                insert_tuples(conn, conversations, COLUMNS, rows)
                insert_tuples(conn, feedback, FB_COLUMNS, fb)
            rows.clear()
            fb.clear()

        with open(path, "rb") as handle:
            for raw in handle:
                obj = loads(raw)
                cid, messages = obj["id"], obj["messages"]
                rows.append((cid, dumps(messages).decode(), obj.get("model"), obj.get("created_at"), obj.get("session_id"),
                             obj.get("user_id"), dumps(obj.get("metadata")).decode(), len(messages), path, "floor", utcnow()))
                for i, event in enumerate(obj.get("feedback") or ()):
                    fb.append((f"{cid}:{i}", cid, event["type"], None, event.get("turn"), None, "floor"))
                n += 1
                if len(rows) >= BATCH:
                    write()
        write()
    print(orjson.dumps({"ingested": n}).decode())


@contextlib.contextmanager
def fresh_database(url: str | None, name: str) -> Iterator[str | None]:
    """A new, empty database on the server of `url` (dropped afterwards), and its URL; None for SQLite."""
    if not url:
        yield None
        return
    import sqlalchemy as sa

    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def server_cpu() -> float:
    """User + system CPU seconds of the PostgreSQL server processes on this machine (0 where there are none), with
    those of its backends that ended already (the postmaster waited for them, so they count as its children's)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.info["name"] in ("postgres", "postmaster") and times is not None:
            total += times.user + times.system + times.children_user + times.children_system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None,
                        help="benchmark PostgreSQL instead of SQLite: a fresh database per configuration on this server")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--workers", type=int, default=1, help="also run with this many validating worker processes")
    parser.add_argument("--only", choices=("floor", "curate"), default=None, help="run one configuration")
    parser.add_argument("--floor", metavar="FILE", help=argparse.SUPPRESS)  # the floor's own process
    parser.add_argument("--floor-inserts", action="store_true", help=argparse.SUPPRESS)  # … without COPY
    parser.add_argument("--inserts", action="store_true",
                        help="PostgreSQL: also run the floor with multi-row INSERTs instead of COPY (the path before COPY)")
    args = parser.parse_args()
    if args.floor:
        floor(args.floor, copy=not args.floor_inserts)
        return
    from curation.synthetic import write_jsonl

    work = Path(args.workdir or tempfile.mkdtemp(prefix="curate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"traffic-{args.n}.jsonl"
    if not data.exists():
        t = time.perf_counter()
        write_jsonl(data, args.n, seed=1, turns=3)
        print(f"generated {args.n:,} conversations ({data.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f}s")
    backend = "postgresql" if args.database_url else "sqlite"
    configs = [("floor: parse + insert, no validation", "floor", 1), ("curate ingest (default)", "curate", 1)]
    if args.inserts and args.database_url:
        configs.insert(0, ("floor: parse + multi-row INSERTs (no COPY)", "floor-inserts", 1))
    if args.workers > 1:
        configs.append((f"curate ingest, {args.workers} worker processes", "curate", args.workers))
    print(f"cores: {os.cpu_count()}  backend: {backend}  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for label, kind, workers in configs:
        if args.only and kind.split("-")[0] != args.only:
            continue
        home = work / f"home-{kind}-{workers}"
        shutil.rmtree(home, ignore_errors=True)
        env = {**os.environ, "CURATE_HOME": str(home), "CURATE_INGEST_WORKERS": str(workers), "HF_HUB_OFFLINE": "1"}
        if kind.startswith("floor"):
            cmd = [sys.executable, __file__, "--floor", str(data), *(["--floor-inserts"] if kind == "floor-inserts" else [])]
        else:
            cmd = [sys.executable, "-m", "curation.cli.main", "ingest", str(data), "--json"]
        load = os.getloadavg()[0]
        with fresh_database(args.database_url, f"curate_bench_{os.getpid()}_{kind.replace('-', '_')}_{workers}") as url:
            if url:
                env["CURATE_DATABASE_URL"] = url
            server = server_cpu()
            summary, seconds, peak_mb, cpu = run(cmd, env)
            server = server_cpu() - server
        assert summary["ingested"] == args.n, summary
        extra = f", server CPU {server / args.n * 1e6:.0f} µs/conversation" if url else ""
        print(f"{label}: {args.n / seconds:,.0f} conversations/s wall ({seconds:.1f}s), "
              f"CPU {cpu / args.n * 1e6:.0f} µs/conversation{extra}, peak RSS {peak_mb:.0f} MiB [{backend}] "
              f"(load average {load:.2f} → {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
