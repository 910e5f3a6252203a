"""Logging soak: `wrap(OpenAI())` logs N calls from 8 threads while the store is taken away again and again; then
`curate ingest` of the spool must leave exactly N conversations, none twice, and the app's overhead stays small.

    .venv/bin/python benchmarks/logging_soak.py --backend sqlite --calls 100000
    .venv/bin/python benchmarks/logging_soak.py --backend postgresql --calls 100000
    .venv/bin/python benchmarks/logging_soak.py --backend postgresql --calls 1000000    # the issue's full size

The app: 8 threads share one wrapped `openai.OpenAI` client calling tests/openai_server.py (a process of its own on
127.0.0.1). The store is made unavailable `--outages` times (default 10), each for a seeded random 5–60 s, with
`--gap` seconds of service between them, starting once 2% of the calls are made:
- sqlite: another process holds the database file's write lock (BEGIN EXCLUSIVE) for the outage;
- postgresql: a PostgreSQL server of its own (scripts/test-postgres.sh on `--pg-port`, a temporary folder) is
  stopped (pg_ctl -m immediate) and started again.
If the calls end before every outage is done, the rest are left out (the report says how many happened).

Reported: the app's overhead per call (the wrapped `create` minus the SDK `create` under it, timed by a shim under
the wrapper) as p50/p99/max, overall and for calls made during an outage, in wall time and in the calling thread's
CPU time (wall time also holds the waits for the GIL that 8 busy threads and the logger's writer impose on each
other; a control run of the same 8 threads through an unwrapped client with the same shim shows that floor); the
logger's written/spooled/lost counts; `curate ingest` of every spool file; and the check: the store holds exactly
the ids the wrapper returned.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import openai  # noqa: E402

from curation import ConversationLogger  # noqa: E402
from curation.integrations.openai import wrap  # noqa: E402
from openai_wrap import start_server  # noqa: E402  # tests/openai_server.py in a process of its own

LOCK_SQLITE = """import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=120)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


class Postgres:
    """A throwaway PostgreSQL server (scripts/test-postgres.sh with its own port and folder)."""

    def __init__(self, port: int, folder: Path):
        folder.chmod(0o755)  # the postgres user reaches its data folder inside
        self.data = folder / "pg"
        self.env = {**os.environ, "CURATE_TEST_PG_PORT": str(port), "CURATE_TEST_PG_DATA": str(self.data)}
        self.bin = max(Path("/usr/lib/postgresql").glob("*/bin"), default=None)
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.bin is None:
            sys.exit("PostgreSQL is not installed: apt-get install -y postgresql")
        self.url = self.start()

    def start(self) -> str:
        return subprocess.run([str(REPO / "scripts" / "test-postgres.sh")], env=self.env, capture_output=True,
                              text=True, check=True).stdout.strip()

    def stop(self) -> None:
        subprocess.run([*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)


def outage_plan(args: argparse.Namespace) -> list[float]:
    rng = random.Random(args.seed)
    return [round(rng.uniform(args.min_outage, args.max_outage), 1) for _ in range(args.outages)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--outages", type=int, default=10)
    parser.add_argument("--min-outage", type=float, default=5.0)
    parser.add_argument("--max-outage", type=float, default=60.0)
    parser.add_argument("--gap", type=float, default=10.0, help="seconds of service between outages")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--port", type=int, default=18767)
    parser.add_argument("--pg-port", type=int, default=55493)
    parser.add_argument("--writer", choices=["process", "thread"], default="process",
                        help="where the logger validates and inserts: its writer process, or a thread of the app")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="curate-soak-"))
    home = folder / "home"
    pg = Postgres(args.pg_port, folder) if args.backend == "postgresql" else None
    url = pg.url if pg else None
    server = start_server(args.port)
    try:
        run(args, home, url, pg)
    finally:
        server.terminate()
        if pg:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, home: Path, url: str | None, pg: Postgres | None) -> None:
    logger = ConversationLogger(home, url=url, process=args.writer == "process")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="soak", max_retries=0)
    inner = threading.local()
    sdk_create = client.chat.completions.create

    def shim(*a, **k):  # under the wrapper: what the SDK call itself takes, in this thread (wall and CPU)
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return sdk_create(*a, **k)
        finally:
            inner.took, inner.cpu = time.perf_counter() - started, time.thread_time() - cpu

    client.chat.completions.create = shim
    wrap(client, logger=logger)
    ids: list[list[str]] = [[] for _ in range(args.threads)]
    overhead, overhead_cpu = np.zeros(args.calls), np.zeros(args.calls)
    during = np.zeros(args.calls, dtype=bool)
    down = threading.Event()
    done = [0]
    events: list[str] = []

    retried = [0]

    def work(t: int) -> None:
        for i in range(t, args.calls, args.threads):
            while True:  # the SDK's own connection error fails the call (nothing is logged) and the app asks again;
                started, cpu = time.perf_counter(), time.thread_time()  # seen once in 1,000,000 calls at load 20
                try:
                    reply = client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                                 "content": f"question {i}"}],
                                                           user=f"user-{i % 1000}", curate_metadata={"soak": i})
                    break
                except openai.APIConnectionError as exc:
                    retried[0] += 1
                    print(f"call {i}: the SDK raised {exc!r} (cause {exc.__cause__!r}); asking again", flush=True)
            overhead[i] = time.perf_counter() - started - inner.took
            overhead_cpu[i] = time.thread_time() - cpu - inner.cpu
            during[i] = down.is_set()
            ids[t].append(reply.curate_id)
            done[0] += 1

    def chaos() -> None:
        while done[0] < args.calls * 0.02 or not logger.written:  # the store exists before it is taken away
            time.sleep(0.05)
        for seconds in outage_plan(args):
            if done[0] >= args.calls:
                break
            at = done[0]
            if pg:
                pg.stop()
                down.set()
                time.sleep(seconds)
                pg.start()
            else:
                locker = subprocess.Popen([sys.executable, "-c", LOCK_SQLITE, str(home / "curate.db"), str(seconds)],
                                          stdout=subprocess.PIPE, text=True)
                locker.stdout.readline()
                down.set()
                locker.wait()
            down.clear()
            events.append(f"{seconds:g} s at call {at:,}")
            end = time.monotonic() + args.gap
            while time.monotonic() < end and done[0] < args.calls:
                time.sleep(0.1)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
    breaker = threading.Thread(target=chaos)
    for th in [*threads, breaker]:
        th.start()
    for th in threads:
        th.join()
    calls_s = time.perf_counter() - started
    breaker.join()
    logger.flush(timeout=900)
    logger.close()
    print(f"{args.backend}: {args.calls:,} calls in {calls_s:.0f} s ({args.calls / calls_s:,.0f}/s, {args.threads} "
          f"threads, writer in a {args.writer}); {len(events)} outages: {'; '.join(events)}")
    print(f"SDK connection errors (the call asked again): {retried[0]}")
    print(f"logger: written {logger.written:,}, spooled {logger.spooled:,}, lost {logger.lost:,}; spool files "
          f"{[str(p) for p in logger.spool.files()]}")
    for kind, values in (("wall", overhead), ("CPU", overhead_cpu)):
        print(f"app overhead per call ({kind}): {_percentiles(values)}"
              + (f"; during outages ({during.sum():,} calls): {_percentiles(values[during])}" if during.any() else ""))
    check(args, home, url, logger.spool.files(), [i for part in ids for i in part])
    control(args, shim_client=openai.OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="soak", max_retries=0))


def _percentiles(seconds: np.ndarray) -> str:
    ms = seconds * 1000
    return f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms, max {ms.max():.1f} ms"


def control(args: argparse.Namespace, shim_client: openai.OpenAI, calls: int = 4000) -> None:
    """The floor of the wall-time figure: the same threads and shim, no wrapper, no logger."""
    inner = threading.local()
    sdk_create = shim_client.chat.completions.create

    def shim(*a, **k):
        started = time.perf_counter()
        try:
            return sdk_create(*a, **k)
        finally:
            inner.took = time.perf_counter() - started

    gaps = np.zeros(calls)

    def work(t: int) -> None:
        for i in range(t, calls, args.threads):
            started = time.perf_counter()
            shim(model="m", messages=[{"role": "user", "content": f"question {i}"}])
            gaps[i] = time.perf_counter() - started - inner.took

    threads = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"control, no wrapper ({calls:,} calls, same threads and shim): {_percentiles(gaps)}")


def check(args: argparse.Namespace, home: Path, url: str | None, spools: list[Path], returned: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CURATE_DATABASE_URL"}
    if url:
        env["CURATE_DATABASE_URL"] = url
    summary = {"read": 0, "ingested": 0, "duplicates": 0, "quarantined": 0}
    started = time.perf_counter()
    if spools:
        out = subprocess.run([sys.executable, "-m", "curation.cli.main", "ingest", *map(str, spools), "--home",
                              str(home), "--json"], capture_output=True, env={**env, "PYTHONPATH": str(REPO)},
                             cwd=REPO, check=True).stdout
        summary = orjson.loads(out)
    print(f"curate ingest SPOOL ({time.perf_counter() - started:.1f} s): " + orjson.dumps(
        {k: summary[k] for k in ("read", "ingested", "duplicates", "quarantined")}).decode())
    engine = sa.create_engine(url or f"sqlite:///{home / 'curate.db'}")
    with engine.connect() as conn:
        stored = list(conn.exec_driver_sql("SELECT id FROM conversations").scalars())
    engine.dispose()
    unique = set(stored)
    print(f"ids returned {len(returned):,} (distinct {len(set(returned)):,}); conversations stored {len(stored):,} "
          f"(distinct {len(unique):,}); missing {len(set(returned) - unique):,}; extra {len(unique - set(returned)):,}; "
          f"load average {os.getloadavg()}")
    ok = len(returned) == len(set(returned)) == len(stored) == len(unique) == args.calls and unique == set(returned)
    print("PASS" if ok else "FAIL")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
