"""`curate loop run` at scale: N new generated conversations, `--push` records pushed, a retrain on `--pairs` pairs.

    .venv/bin/python benchmarks/loop_scale.py --n 100000 --push 200 --pairs 2000 [--runs 2]

With `--runs 2` (or more), each later run first writes `--n` more new conversations (another seed and id prefix), as
the next day's traffic: from the second run on, the champion the first run promoted scores conversations (run 2
scores its own new ones and the first run's backlog, run 3 and later only their new ones).

The pairs come from existing preference data mixed into the export (`export.mix`), generated here as
(good answer ≻ planted failure) pairs, since a benchmark has no people rating 2,000 records. The embedded Argilla
server runs beside the loop. Prints each step's time, the total, and the peak RSS of the loop process tree
(sampled every 100 ms) and of the server.
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
import psutil

from curation.synthetic import generate, write_jsonl

TEST_SIZE = 0.1


def pairs_file(path: Path, n: int) -> Path:
    """`n` distinct pairs: the export drops repeated (prompt, chosen, rejected) triples, so count distinct ones."""
    rows, seen = [], set()
    for record in generate(n * 40, seed=99, id_prefix="pairs"):
        truth = record["metadata"]["demo_truth"]
        if truth["last_answer_failure"] and truth["reference"] != record["messages"][-1]["content"]:
            row = {"prompt": record["messages"][:-1], "chosen": [{"role": "assistant", "content": truth["reference"]}],
                   "rejected": [record["messages"][-1]], "margin": 2.0}
            key = orjson.dumps([row["prompt"], row["chosen"], row["rejected"]])
            if key not in seen:
                seen.add(key)
                rows.append(row)
        if len(rows) == n:
            break
    if len(rows) < n:
        raise SystemExit(f"the generator gave only {len(rows):,} distinct pairs; ask for fewer")
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--push", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=1, help="loop runs, each after --n more new conversations")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    home = Path(args.workdir or tempfile.mkdtemp(prefix="curate-loop-bench-")) / "home"
    home.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    write_jsonl(home / "incoming" / "traffic.jsonl", args.n, seed=7)
    # The export keeps `test_size` of the pairs aside for the gate, so generate enough for `--pairs` to train on.
    pairs = pairs_file(home / "existing-pairs.jsonl", round(args.pairs / (1 - TEST_SIZE)))
    print(f"generated {args.n:,} conversations and {sum(1 for _ in pairs.open()):,} pairs in {time.perf_counter() - t:.0f}s")
    (home / "bench.toml").write_text(f"""name = "bench"
[sources]
paths = ["{{home}}/incoming"]
[annotate]
dataset = "bench"
budget = {args.push}
[export]
mix = ["{pairs}"]
test_size = {TEST_SIZE}
[train]
min_new_pairs = 1
epochs = 1.0
""")
    from annotations.server import start_background

    server = start_background(home, api_key="bench.apikey.0001", owner_password="bench-password")
    env = {**os.environ, "CURATE_HOME": str(home), "ARGILLA_API_URL": server.url, "ARGILLA_API_KEY": server.api_key,
           "HF_HUB_OFFLINE": "1"}
    try:
        for run in range(1, args.runs + 1):
            if run > 1:
                write_jsonl(home / "incoming" / f"traffic-{run}.jsonl", args.n, seed=7 + run, id_prefix=f"day{run}")
            loop_run(home, env, server, f"run {run} of {args.runs}")
    finally:
        server.stop()


def loop_run(home: Path, env: dict, server, label: str) -> None:
    print(f"{label}: cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}", flush=True)
    started = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-m", "curation.cli.main", "loop", "run", "--config", str(home / "bench.toml"), "--json"],
                        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak, server_peak = 0, 0
    server_proc = psutil.Process(server.process.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
            server_peak = max(server_peak, server_proc.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    total = time.perf_counter() - started
    summary = orjson.loads(proc.stdout.read())
    print(f"{label}: status {summary['status']}; total {total / 60:.1f} min; peak RSS {peak / 2**30:.2f} GiB (loop), "
          f"{server_peak / 2**30:.2f} GiB (Argilla server)")
    for name, step in summary["steps"].items():
        figures = {k: v for k, v in step["figures"].items() if isinstance(v, (int, float)) and k != "seconds"}
        print(f"  {name:<9} {step['status']:<8} {step['seconds'] or 0:8.1f}s  {figures}", flush=True)

if __name__ == "__main__":
    main()
