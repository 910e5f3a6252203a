"""HelpSteer2-style ratings from oasst1's human review labels, as a file for `curate annotate import`.

    python benchmarks/oasst_ratings.py --home HOME --out ratings.jsonl [--limit 300] [--seed 0]

The store must hold ../shared/data/oasst1-en-validation (`curate ingest`). Each conversation is matched to the
review of its last reply the way benchmarks/failure_discovery.py does it (metadata["oasst_review"], the entry whose
turn is the last message). The mapping, to 0–4 with halves rounded up:
    helpfulness = round(4 · quality)             (oasst1 `quality`, the reviewers' mean, 0–1)
    correctness = round(4 · (1 − fails_task))    (oasst1 `fails_task`, the share of reviewers who said it fails)
An attribute whose label is missing is left blank; a conversation with neither label gets no row. The labels are
people's (oasst1 reviewers), but the mapping onto HelpSteer2's scale is ours: the learning-curve simulation uses
them as its annotator. Pass annotator="simulated-annotator-oasst1" to have exports mark them simulated.
"""
from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path
from typing import Iterable

import orjson
import sqlalchemy as sa

ANNOTATOR = "oasst1-reviewers"


def to_scale(share: float) -> int:
    """A 0–1 label onto 0–4, halves rounded up (Python's round() would send 2.5 to 2)."""
    return int(math.floor(4 * min(max(share, 0.0), 1.0) + 0.5))


def oasst_ratings(store, ids: Iterable[str] | None = None, annotator: str = ANNOTATOR) -> list[dict]:
    """One rating row per conversation (ordered by id) whose last reply has a `quality` or `fails_task` label."""
    from curation.store.tables import conversations

    wanted = set(ids) if ids is not None else None
    rows = []
    with store.connect() as conn:
        found = conn.execute(sa.select(conversations.c.id, conversations.c.messages, conversations.c.metadata)
                             .where(conversations.c.id.like("oasst:%")).order_by(conversations.c.id))
        for cid, messages, metadata in found:
            if wanted is not None and cid not in wanted:
                continue
            last = len(orjson.loads(messages)) - 1
            reviews = (orjson.loads(metadata or "{}") or {}).get("oasst_review") or {}
            review = next((r for r in reviews.values() if r.get("turn") == last), None)
            labels = (review or {}).get("labels") or {}
            if "quality" not in labels and "fails_task" not in labels:
                continue
            rows.append({
                "conversation_id": cid,
                "helpfulness": to_scale(labels["quality"]) if "quality" in labels else None,
                "correctness": to_scale(1 - labels["fails_task"]) if "fails_task" in labels else None,
                "annotator": annotator,
            })
    return rows


def write_ratings(store, out: str | Path, ids: Iterable[str] | None = None, limit: int | None = None,
                  seed: int = 0, annotator: str = ANNOTATOR) -> int:
    """Write the ratings of `ids` (default: every labelled conversation; `limit` of them drawn with `seed`) to
    `out` (.jsonl or .csv) for `curate annotate import`; returns how many rows were written."""
    rows = oasst_ratings(store, ids, annotator)
    if limit is not None and limit < len(rows):
        rows = sorted(random.Random(seed).sample(rows, limit), key=lambda r: r["conversation_id"])
    out = Path(out)
    if out.suffix == ".csv":
        with open(out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["conversation_id", "helpfulness", "correctness", "annotator"])
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    else:
        out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return len(rows)


def main() -> None:
    from curation.store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="Curate home that holds the ingested oasst1 conversations")
    parser.add_argument("--out", required=True, help="ratings file to write (.jsonl or .csv)")
    parser.add_argument("--limit", type=int, default=None, help="rate only this many conversations, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="seed of that draw")
    parser.add_argument("--annotator", default=ANNOTATOR, help="annotator name written in each row")
    args = parser.parse_args()
    n = write_ratings(Store.open(args.home), args.out, limit=args.limit, seed=args.seed, annotator=args.annotator)
    print(f"wrote {n} ratings to {args.out}; import them with `curate annotate import {args.out} --dataset NAME`")


if __name__ == "__main__":
    main()
