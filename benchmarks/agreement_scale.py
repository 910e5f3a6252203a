"""Agreement over many annotators: how long `annotations.agreement.agreement` takes, and its peak memory.

    .venv/bin/python benchmarks/agreement_scale.py --annotators 520 --rows 260000 --layout sparse
    .venv/bin/python benchmarks/agreement_scale.py --annotators 520 --rows 260000 --layout dense

Responses are made up, seeded: each annotator rates near a record's hidden quality (±1), five attributes 0–4.
- sparse: every record is rated by 2 or 3 annotators drawn at random (a crowd, as in HelpSteer2);
- dense: every annotator rates the same records (rows / annotators of them: a calibration set).
Prints one JSON line: seconds, peak RSS (MB), the overall κ and α before the spread filter, and κ's sample share.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotations.agreement import agreement  # noqa: E402
from annotations.template import ATTRIBUTES  # noqa: E402


def responses(annotators: int, rows: int, layout: str, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    if layout == "dense":
        per = rows // annotators
        raters = [np.arange(annotators) for _ in range(per)]
    else:
        sizes = rng.integers(2, 4, size=rows // 2)
        sizes = sizes[np.cumsum(sizes) <= rows]
        first = rng.integers(0, annotators, size=len(sizes))
        step = rng.integers(1, annotators, size=(len(sizes), 2))  # three different annotators per record
        step[:, 1] = np.where(step[:, 1] == step[:, 0], step[:, 1] % (annotators - 1) + 1, step[:, 1])
        who = np.column_stack([first, (first + step[:, 0]) % annotators, (first + step[:, 1]) % annotators])
        raters = [who[i, :k] for i, k in enumerate(sizes)]
    out = []
    for record, who in enumerate(raters):
        quality = rng.integers(0, 5, size=len(ATTRIBUTES))
        noise = rng.integers(-1, 2, size=(len(who), len(ATTRIBUTES)))
        values = np.clip(quality + noise, 0, 4)
        for annotator, row in zip(who, values):
            out.append({"record_id": f"r{record}", "annotator": f"a{annotator}",
                        **{name: int(v) for name, v in zip(ATTRIBUTES, row)}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=520)
    parser.add_argument("--rows", type=int, default=260_000)
    parser.add_argument("--layout", choices=["sparse", "dense"], default="sparse")
    args = parser.parse_args()
    data = responses(args.annotators, args.rows, args.layout)
    started = time.perf_counter()
    stats = agreement(data)
    seconds = time.perf_counter() - started
    before = stats["before_filter"]
    print(orjson.dumps({"annotators": args.annotators, "rows": len(data), "layout": args.layout,
                        "records": stats["records"], "seconds": round(seconds, 2),
                        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                        "kappa": before["overall"]["kappa"], "alpha": before["overall"]["alpha"],
                        "kappa_sample": before.get("kappa_sample")}).decode())


if __name__ == "__main__":
    main()
