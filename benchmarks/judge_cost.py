"""What `curate judge` costs on the client: judgements/s and client CPU per judgement, and the cost of a rerun.

    .venv/bin/python benchmarks/judge_cost.py [--conversations 10000] [--concurrency 16] [--delay 0.2]

A local chat server in a process of its own (tests/chat_fault_server.py --default judge) answers each request with
a valid judgement after `--delay` seconds. `Judge.judge(every=True)` judges `--conversations` sample conversations
(`curation.synthetic`) at `--concurrency`, with PII redaction on (annotations.pii, as `curate judge` does); the
figures are judgements/s against the ideal (concurrency / delay) and this process's CPU per judgement (all threads:
reading and hashing the conversations, redaction, HTTP, parsing, the store's writes). Then the same call again: the
rerun must make 0 requests. Targets (issue 20): ≥ 60 judgements/s and ≤ 2 ms CPU per judgement at 200 ms and 16.
Prints one JSON object with the figures, the CPU flags and the load average.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_flags() -> str:
    flags = set()
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    wanted = ["avx2", "avx512f", "avx512_vnni", "amx_tile"]
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()

    from annotations.pii import Redactor
    from curation.endpoints import Endpoint
    from curation.ingest import ingest_records
    from curation.judge.config import JudgeSettings
    from curation.judge.run import Judge
    from curation.synthetic import generate as sample
    from curation.store import Store

    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "chat_fault_server.py"), "--port", "0", "--delay",
                             str(args.delay), "--default", "judge"], stdout=subprocess.PIPE)
    url = proc.stdout.readline().decode().strip()
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory() as home:
            store = Store.open(home)
            ingest_records(store, sample(args.conversations, seed=1))
            settings = JudgeSettings(endpoints=[Endpoint(url=url, model="bench-judge", temperature=0.0)],
                                     concurrency=args.concurrency)
            judge = Judge(settings, redact=Redactor().redact)
            cpu, wall = time.process_time(), time.perf_counter()
            first = judge.judge(store, every=True, progress=False)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            cpu2, wall2 = time.process_time(), time.perf_counter()
            rerun = judge.judge(store, every=True, progress=False)
            cpu2, wall2 = time.process_time() - cpu2, time.perf_counter() - wall2
            store.dispose()
    finally:
        proc.kill()
        proc.wait()
    judged = max(1, first["judged"])
    print(orjson.dumps({
        "conversations": args.conversations, "server_delay_s": args.delay, "concurrency": args.concurrency,
        "ideal_judgements_per_s": round(args.concurrency / args.delay, 1),
        "first": {"judged": first["judged"], "failed": first["failed"], "requests": first["requests"],
                  "seconds": round(wall, 1), "judgements_per_s": round(first["judged"] / wall, 1),
                  "cpu_ms_per_judgement": round(1000 * cpu / judged, 3)},
        "rerun": {"cached": rerun["cached"], "requests": rerun["requests"], "seconds": round(wall2, 2),
                  "cpu_s": round(cpu2, 2)},
        "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
