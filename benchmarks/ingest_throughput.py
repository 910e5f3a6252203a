"""Ingest throughput and peak memory: generated JSONL (3 user turns each) → the store.

    .venv/bin/python benchmarks/ingest_throughput.py --n 1000000
    .venv/bin/python benchmarks/ingest_throughput.py --n 1000000 --database-url postgresql+psycopg://postgres@127.0.0.1:55432/bench

Each configuration runs `curate ingest` in a fresh home as a subprocess; peak RSS is the largest sum of RSS over the
process and its workers, sampled every 50 ms. Two configurations run on the same file: the default (validation in
the ingesting process) and the opt-in worker processes (`CURATE_INGEST_WORKERS=2`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import psutil

from curation.sample import write_jsonl


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
        raise SystemExit(f"ingest failed: {out[-500:]!r}")
    return orjson.loads(out), seconds, peak / 2**20, sum(cpu.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="benchmark PostgreSQL instead of SQLite")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="curate-bench-"))
    data = work / f"traffic-{args.n}.jsonl"
    if not data.exists():
        t = time.perf_counter()
        write_jsonl(data, args.n, seed=1, turns=3)
        print(f"generated {args.n:,} conversations ({data.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f}s")
    print(f"cores: {os.cpu_count()}  load average before: {os.getloadavg()[0]:.2f}")
    for label, workers in (("default: validate in one process", 1), ("option: validate in 2 worker processes", 2)):
        home = work / f"home-{workers}"
        shutil.rmtree(home, ignore_errors=True)
        env = {**os.environ, "CURATE_HOME": str(home), "CURATE_INGEST_WORKERS": str(workers)}
        if args.database_url:
            import sqlalchemy as sa

            engine = sa.create_engine(args.database_url)
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            env["CURATE_DATABASE_URL"] = args.database_url
        summary, seconds, peak_mb, cpu = run([sys.executable, "-m", "curation.cli.main", "ingest", str(data), "--json"], env)
        assert summary["ingested"] == args.n, summary
        print(f"{label}: {args.n / seconds:,.0f} conversations/s wall ({seconds:.1f}s), "
              f"CPU {cpu / args.n * 1e6:.0f} µs/conversation, peak RSS {peak_mb:.0f} MiB "
              f"[{'postgresql' if args.database_url else 'sqlite'}]")


if __name__ == "__main__":
    main()
