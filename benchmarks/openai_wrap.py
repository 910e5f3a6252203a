"""The OpenAI wrapper: the latency it adds per call, and that logging loses nothing when the store dies mid-run.

    .venv/bin/python benchmarks/openai_wrap.py overhead --calls 2000
    .venv/bin/python benchmarks/openai_wrap.py loss --calls 100000

Both talk to tests/openai_server.py (the chat-completions protocol over HTTP/1.1 keep-alive, JSON and SSE) running
as a process of its own on 127.0.0.1, through the real `openai` client.

overhead: a plain client and a wrapped one (logging into a fresh SQLite home, its writer thread running) call the
same server alternately, after a warm-up. Reported: (1) the wrapper's own time per call, measured directly: the
wrapped `create` minus the SDK `create` inside it, timed by a shim placed under the wrapper; (2) the percentiles of
whole calls, wrapped and plain, and their difference, for whole replies and for streams read to the end.

loss: `--calls` calls through a wrapped client (4 threads) logging into a PostgreSQL server of its own
(scripts/test-postgres.sh on another port and folder). At 30% of the calls the server is killed (pg_ctl stop -m
immediate), at 60% started again. Then `curate ingest SPOOL` loads the spool, and the store must hold exactly one
conversation per call: every id the wrapper returned, none missing, none extra.
"""
from __future__ import annotations

import argparse
import os
import shutil
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

import openai

from curation import ConversationLogger
from curation.integrations.openai import wrap

ASK = [{"role": "system", "content": "You are a helpful assistant."},
       {"role": "user", "content": "Summarise the plot of Hamlet in three sentences, please."}]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # the URL, once it listens
    return proc


def pct(values: list[float]) -> tuple[float, float]:
    a = np.array(values) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def overhead(args: argparse.Namespace) -> None:
    server = start_server(args.port)
    home = Path(tempfile.mkdtemp(prefix="curate-wrap-bench-")) / "home"
    try:
        url = f"http://127.0.0.1:{args.port}/v1"
        plain = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)
        # writer idle: records only queue up during the measurement (the wrapper's own code); writer running: the
        # logger's thread writes batches to SQLite meanwhile, as in production, and shares the GIL with the app
        for setting, logger in (("writer idle", ConversationLogger(home, batch_size=10**7, flush_interval=3600)),
                                ("writer running", ConversationLogger(home))):
            print(f"-- {setting}")
            measure(args, plain, url, logger)
            logger.close()
            print(f"   logged {logger.written:,} conversations, spooled {logger.spooled:,}")
        print(f"load average {os.getloadavg()}")
    finally:
        server.terminate()
        shutil.rmtree(home.parent, ignore_errors=True)


def measure(args: argparse.Namespace, plain: openai.OpenAI, url: str, logger: ConversationLogger) -> None:
    wrapped = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)
    inner_times: list[float] = []
    sdk_create = wrapped.chat.completions.create

    def shim(*a, **k):  # under the wrapper: what the SDK call itself takes
        t = time.perf_counter()
        try:
            return sdk_create(*a, **k)
        finally:
            inner_times.append(time.perf_counter() - t)

    wrapped.chat.completions.create = shim
    wrap(wrapped, logger=logger)
    for stream in (False, True):
        for client in (plain, wrapped) * args.warmup:
            call(client, stream)
        inner_times.clear()
        times: dict[str, list[float]] = {"plain": [], "wrapped": []}
        added = []
        for i in range(args.calls):
            for name, client in (("plain", plain), ("wrapped", wrapped)) if i % 2 else (("wrapped", wrapped), ("plain", plain)):
                t = time.perf_counter()
                call(client, stream)
                took = time.perf_counter() - t
                times[name].append(took)
                if name == "wrapped" and not stream:
                    added.append(took - inner_times[-1])
        p_plain, p_wrapped = pct(times["plain"]), pct(times["wrapped"])
        kind = "stream" if stream else "whole"
        print(f"   {kind}: plain p50 {p_plain[0]:.3f} ms p99 {p_plain[1]:.3f} ms | wrapped p50 {p_wrapped[0]:.3f} ms "
              f"p99 {p_wrapped[1]:.3f} ms | difference p50 {p_wrapped[0] - p_plain[0]:+.3f} ms "
              f"p99 {p_wrapped[1] - p_plain[1]:+.3f} ms  ({args.calls} calls each)")
        if added:
            own = pct(added)
            print(f"   {kind}: wrapper's own time per call (wrapped create - SDK create): p50 {own[0]:.3f} ms "
                  f"p99 {own[1]:.3f} ms max {max(added) * 1000:.3f} ms")


def call(client: openai.OpenAI, stream: bool) -> None:
    if stream:
        for _ in client.chat.completions.create(model="m", messages=ASK, stream=True):
            pass
    else:
        client.chat.completions.create(model="m", messages=ASK)


def loss(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="curate-wrap-pg-"))
    data.chmod(0o755)  # the postgres user reaches its data folder inside
    env = {**os.environ, "CURATE_TEST_PG_PORT": str(args.pg_port), "CURATE_TEST_PG_DATA": str(data / "pg")}
    url = subprocess.run([str(REPO / "scripts" / "test-postgres.sh")], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    if not url:
        sys.exit("PostgreSQL is not installed: apt-get install -y postgresql")
    pg_bin = max(Path("/usr/lib/postgresql").glob("*/bin"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    server = start_server(args.port)
    home = data / "home"
    spool = data / "spool.jsonl"
    try:
        logger = ConversationLogger(home, url=url, spool=spool)
        base = f"http://127.0.0.1:{args.port}/v1"
        ids: list[list[str]] = [[] for _ in range(args.threads)]
        done = [0]
        events: list[str] = []

        def work(t: int) -> None:
            client = wrap(openai.OpenAI(base_url=base, api_key="bench", max_retries=0), logger=logger)
            for i in range(t, args.calls, args.threads):
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"question {i}"}], user=f"user-{i % 100}")
                ids[t].append(reply.curate_id)
                done[0] += 1

        def chaos() -> None:
            while done[0] < args.calls * 0.3:
                time.sleep(0.05)
            subprocess.run([*as_pg, str(pg_bin / "pg_ctl"), "-D", str(data / "pg"), "-m", "immediate", "stop"],
                           check=True, capture_output=True)
            events.append(f"killed PostgreSQL after {done[0]:,} calls")
            while done[0] < args.calls * 0.6:
                time.sleep(0.05)
            subprocess.run([str(REPO / "scripts" / "test-postgres.sh")], env=env, check=True, capture_output=True)
            events.append(f"restarted PostgreSQL after {done[0]:,} calls")

        started = time.perf_counter()
        threads = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
        killer = threading.Thread(target=chaos)
        for th in [*threads, killer]:
            th.start()
        for th in threads:
            th.join()
        calls_s = time.perf_counter() - started
        killer.join()
        logger.flush(timeout=600)
        logger.close()
        print("; ".join(events))
        print(f"{args.calls:,} calls in {calls_s:.1f} s ({args.calls / calls_s:,.0f}/s, {args.threads} threads); "
              f"logger wrote {logger.written:,}, spooled {logger.spooled:,}")
        curate = [str(Path(sys.executable).parent / "curate")]
        t = time.perf_counter()
        out = subprocess.run([*curate, "ingest", str(spool), "--home", str(home), "--json"], capture_output=True,
                             env={**os.environ, "CURATE_DATABASE_URL": url}, check=True).stdout
        summary = orjson.loads(out)
        print(f"curate ingest SPOOL ({time.perf_counter() - t:.1f} s): " + orjson.dumps(
            {k: summary[k] for k in ("read", "ingested", "duplicates", "quarantined", "conversations")}).decode())
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            stored = set(conn.exec_driver_sql("SELECT id FROM conversations").scalars())
        engine.dispose()
        returned = [i for part in ids for i in part]
        print(f"ids returned {len(returned):,} (distinct {len(set(returned)):,}); conversations stored {len(stored):,}; "
              f"missing {len(set(returned) - stored):,}; extra {len(stored - set(returned)):,}; "
              f"load average {os.getloadavg()}")
        ok = len(returned) == len(set(returned)) == len(stored) == args.calls and stored == set(returned)
        print("PASS" if ok else "FAIL")
        if not ok:
            sys.exit(1)
    finally:
        server.terminate()
        subprocess.run([*as_pg, str(pg_bin / "pg_ctl"), "-D", str(data / "pg"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--calls", type=int, default=2000)
    o.add_argument("--warmup", type=int, default=200)
    o.add_argument("--port", type=int, default=18765)
    lo = sub.add_parser("loss")
    lo.add_argument("--calls", type=int, default=100_000)
    lo.add_argument("--threads", type=int, default=4)
    lo.add_argument("--port", type=int, default=18766)
    lo.add_argument("--pg-port", type=int, default=55491)
    args = parser.parse_args()
    (overhead if args.what == "overhead" else loss)(args)


if __name__ == "__main__":
    main()
