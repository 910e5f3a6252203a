"""Failure discovery on oasst1: do the highest failure scores point at replies humans rated low?

    python benchmarks/failure_discovery.py

Ingests ../shared/data/oasst1-en-validation into a fresh store and scores it with the default detectors, which see
messages and feedback only (the review labels stay in metadata["oasst_review"], read here to judge, never by a
detector). A reply is low quality when its review says quality ≤ 0.25 or fails_task ≥ 0.5. Reports the low-quality
rate among the top-scored conversations against the overall rate (lift), for all detectors and for explicit
feedback alone (thumbs and flags), the baseline a team without Curate would have.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import orjson
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oasst1-en-validation" / "oasst1-en-validation.jsonl"


def judged(store) -> list[tuple[float, bool]]:
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT c.metadata, c.messages, f.failure_score FROM conversations c "
                                    "JOIN failure_scores f ON f.conversation_id = c.id ORDER BY c.id")).all()
    out = []
    for metadata, messages, score in rows:
        last = len(orjson.loads(messages)) - 1
        review = next((r for r in orjson.loads(metadata)["oasst_review"].values() if r["turn"] == last), None)
        labels = (review or {}).get("labels") or {}
        if "quality" in labels:
            out.append((score, labels["quality"] <= 0.25 or labels.get("fails_task", 0) >= 0.5))
    return out


def main() -> None:
    from curation.ingest import ingest
    from curation.signals import default_detectors, score_failures
    from curation.store import Store

    with tempfile.TemporaryDirectory() as home:
        store = Store.open(home)
        ingest(store, [DATA], progress=False)
        variants = {"all detectors": default_detectors(),
                    "explicit feedback only": [d for d in default_detectors() if d.name in ("thumbs_down", "flag", "thumbs_up")]}
        for name, detectors in variants.items():
            started = time.perf_counter()
            summary = score_failures(store, detectors=detectors, progress=False)
            seconds = time.perf_counter() - started
            rows = sorted(judged(store), key=lambda t: -t[0])
            base = sum(low for _, low in rows) / len(rows)
            print(f"{name}: {summary['scored']} conversations scored in {seconds:.1f}s; {len(rows)} with a review label; "
                  f"low-quality base rate {base:.1%}; flagged (score ≥ 0.5): {summary['failures']}")
            for top in (25, 50, 100, len(rows) // 10):
                hit = sum(low for _, low in rows[:top]) / top
                print(f"  top {top:>3}: {hit:.1%} low quality, lift {hit / base:.2f}×")
            flagged = [low for score, low in rows if score >= 0.5]
            if flagged:
                rate = sum(flagged) / len(flagged)
                print(f"  score ≥ 0.5 ({len(flagged)}): {rate:.1%} low quality, lift {rate / base:.2f}×")


if __name__ == "__main__":
    main()
