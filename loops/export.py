"""Exports from ratings: preference pairs in TRL's conversational columns, and a rating-regression dataset.

Pair rules (each can be switched on or off, see `PairRules`):
  (a) "ratings":    two or more responses rated on their own for the same context are paired; each response's score
                    is its helpfulness (or a weighted sum of attributes); chosen = the higher, margin = the
                    difference; pairs closer than `tie_threshold` are dropped as ties.
  (b) "preference": a HelpSteer2-Preference strength −3…3 on a two-response record; the sign picks the chosen
                    response (negative = A), margin = |strength|; |strength| < `preference_threshold` (0) is dropped.
  (c) "rewrite":    an annotator's rewrite ≻ the original response, margin = `rewrite_margin`.
  (d) "feedback":   (off by default) production feedback between sibling responses to the same context: a reply with
                    a thumbs-up (or a 4–5 rating) ≻ one with a thumbs-down (or 1–2), margin = `feedback_margin`.
Records flagged for annotator disagreement are left out unless `include_disagreement`. A pair or rating row that rests
on a simulated annotator (`loops.simulate`) is marked `simulated: true` and counted, so it never passes for people's.
A record whose response B was
generated was shown in a random order (`annotations.order`); (b) and (c) undo that order.

The split is grouped by context (no prompt on both sides) and stratified by cluster, deterministic for a seed.
Every export writes the data, `manifest.json` (counts, rules, thresholds, agreement, source runs, mixed-in sources,
a content version) and a dataset card `README.md`, and is recorded in `preference_exports` (`loops.export_files`,
which also keeps an export from writing over anything but an earlier export). The rules are in `loops.pairs`.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa

from annotations.tables import annotation_records, ratings
from annotations.template import ATTRIBUTES
from curation.errors import CurateError, InputError
from curation.judge import latest_judgements
from curation.messages import context_id
from curation.store import Store, loads, utcnow
from loops.export_config import PairRules
from loops.export_files import FORMATS, MARKER, OUTPUTS, check_out, write_export
from loops.judge_pairs import SOURCE as JUDGE
from loops.judge_pairs import judge_pairs
from loops.pairs import build_pairs, load_units, make_pair, plain_message
from loops.reward.data import read_rows, standardize_pair
from loops.simulate import is_simulated, simulated_annotators

__all__ = ["FORMATS", "MARKER", "OUTPUTS", "PairRules", "build_pairs", "check_out", "context_id", "export_preferences",
           "export_ratings", "split"]
LICENCE_NOTE = ("Conversations come from your own traffic: check your users' terms and your privacy policy before "
                "sharing. Mixed-in sources keep their own licences (listed under `mixed`).")


def split(rows: list[dict], test_size: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Grouped by `context_id`, stratified by `cluster_id`; the same rows and seed give the same split."""
    strata: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        strata[str(r.get("cluster_id"))].add(r["context_id"])
    test_contexts: set[str] = set()
    carry = 0.0
    for _, contexts in sorted(strata.items()):
        ordered = sorted(contexts - test_contexts, key=lambda c: hashlib.sha256(f"{seed}:{c}".encode()).hexdigest())
        # Carry the fractional part across strata so that small clusters still add up to test_size overall.
        carry += len(ordered) * test_size
        take = math.floor(carry + 1e-9)
        carry -= take
        test_contexts.update(ordered[:take])
    return [r for r in rows if r["context_id"] not in test_contexts], [r for r in rows if r["context_id"] in test_contexts]


def _mix(sources: list[str]) -> tuple[list[dict], list[dict]]:
    """Rows from existing TRL-format preference data (a local file/folder, or a hub dataset id when online)."""
    rows, info = [], []
    for source in sources:
        path = Path(source)
        if path.exists():
            raw = read_rows(path, "train") + (read_rows(path, "test") if path.is_dir() else [])
        else:
            try:
                from datasets import load_dataset

                raw = load_dataset(source, split="train").to_list()
            except Exception as exc:  # datasets raises many kinds; the fix is the same
                raise InputError(f"cannot load {source!r} as a local file/folder or a hub dataset ({exc.__class__.__name__}); "
                                 "pass a TRL-format JSONL/Parquet file or export folder, or go online for hub ids") from None
        for r in raw:
            p = standardize_pair(r)
            rows.append(make_pair([plain_message(m) for m in p["prompt"]], plain_message(p["chosen"][0]),
                                  plain_message(p["rejected"][0]), p.get("margin") if p.get("margin") is not None else 1.0,
                                  "mixed", cluster_id=p.get("cluster_id"), source=source,
                                  simulated=bool(p.get("simulated"))))
        info.append({"source": source, "pairs": len(raw)})
    return rows, info


def export_preferences(store: Store, out: str | Path, fmt: str = "hf", rules: PairRules | None = None,
                       dataset: str | None = None, mix: list[str] | None = None,
                       push_to_hub: str | None = None, overwrite: bool = False, include_judge: bool = False) -> dict:
    """Write preference pairs (TRL conversational columns + provenance) to `out` (see `check_out`). With
    `include_judge`, judge-derived pairs too (loops/judge_pairs.py), each marked source=judge, counted and carded.

    Returns {"pairs", "train", "test", "out", "version"}.
    """
    rules = rules or PairRules()
    out = Path(out)
    check_out(store, out, overwrite)
    with store.run("export", {"kind": "preferences", "out": str(out), "format": fmt, **asdict(rules)}) as run:
        run_id = run.id
        pairs, stats = build_pairs(store, rules, dataset)
        if include_judge:
            pairs += _judge_pairs(store, rules, stats)
        mixed, mixed_info = _mix(list(mix or []))
        rows = pairs + mixed
        if not rows:
            raise CurateError(_why_no_pairs(store, rules, stats, dataset))
        train, test = split(rows, rules.test_size, rules.seed)
        by_rule: dict[str, int] = defaultdict(int)
        for r in rows:
            by_rule[r["rule"]] += 1
        manifest = {
            "kind": "preferences", "created_at": utcnow(), "format": fmt, "run_id": run_id, "dataset": dataset,
            "counts": {"pairs": len(rows), "train": len(train), "test": len(test), "by_rule": dict(by_rule),
                       "contexts": len({r["context_id"] for r in rows}), "simulated": sum(r["simulated"] for r in rows),
                       **({"judge": sum(r["source"] == JUDGE for r in rows)} if include_judge else {})},
            "rules": asdict(rules), "agreement": {k: v for k, v in stats.items() if k != "source_runs"},
            "source_runs": stats.get("source_runs", []), "mixed": mixed_info, "licence": LICENCE_NOTE,
        }
        return run.finish(write_export(store, out, fmt, "preferences", train, test, manifest, run_id, push_to_hub))


def _judge_pairs(store: Store, rules: PairRules, stats: dict) -> list[dict]:
    with store.connect() as conn:
        judged = latest_judgements(conn)
        units = load_units(conn, set(judged))
    pairs, stats["judge_ties_dropped"] = judge_pairs(judged, units, context_id, make_pair, rules.tie_threshold,
                                                     rules.weights)
    return pairs


def _why_no_pairs(store: Store, rules: PairRules, stats: dict, dataset: str | None) -> str:
    """Why an export made no pairs, and the next step, from what the store holds and which rules were tried.
    Starts with "no preference pairs" (the loop's export step reads that as "nothing to export yet")."""
    name = dataset or "NAME"
    feedback_tried = ("; production feedback (--rule feedback) made none either: it pairs a thumbs-up reply with a "
                      "thumbs-down reply to the same context") if "feedback" in rules.rules else ""
    if not stats.get("records"):
        with store.connect() as conn:
            query = sa.select(sa.func.count()).select_from(annotation_records)
            pushed = conn.execute(query.where(annotation_records.c.dataset == dataset) if dataset else query).scalar_one()
        rate = (f"have them rated in Argilla, or by simulated annotators (`curate annotate simulate --dataset {name}`, "
                f"marked simulated), then `curate annotate pull --dataset {name}`")
        step = (f"{pushed:,} records were pushed but none is rated in the store yet: {rate}" if pushed else
                f"nothing was sent for rating: `curate annotate push --dataset {name} --budget N`, {rate}")
        return f"no preference pairs: no ratings{f' in {dataset!r}' if dataset else ''}; {step}{feedback_tried}"
    tips = []
    if stats.get("ties_dropped"):
        tips.append(f"{stats['ties_dropped']:,} rated pairs were ties under --tie-threshold {rules.tie_threshold:g}: lower it")
    if stats.get("excluded_disagreement") and not rules.include_disagreement:
        tips.append(f"{stats['excluded_disagreement']:,} records flagged for disagreement were left out: "
                    "--include-disagreement keeps them")
    if "feedback" not in rules.rules:
        tips.append("--rule feedback also pairs thumbs-up ≻ thumbs-down replies to one context")
    left_out = [r for r in PairRules.rules if r not in rules.rules]
    if left_out:
        tips.append(f"--rule replaces the default rules: add {' '.join(f'--rule {r}' for r in left_out)}")
    if not tips:
        tips.append("rule (a) needs two rated replies to one context, rule (b) a two-response record "
                    "(`curate annotate push --pairs`): rate more records")
    return f"no preference pairs from {stats['records']:,} rated records{feedback_tried}; " + "; ".join(tips)


def export_ratings(store: Store, out: str | Path, fmt: str = "hf", dataset: str | None = None,
                   include_disagreement: bool = PairRules.include_disagreement,
                   test_size: float = PairRules.test_size, seed: int = PairRules.seed,
                   overwrite: bool = False) -> dict:
    """Write the regression dataset: context, response and the five consensus attributes per rated response
    to `out` (see `check_out`)."""
    out = Path(out)
    check_out(store, out, overwrite)
    with store.run("export", {"kind": "ratings", "out": str(out), "format": fmt}) as run:
        run_id = run.id
        with store.connect() as conn:
            simulated_ids = simulated_annotators(conn)
            query = sa.select(ratings).where(ratings.c.conversation_id_b.is_(None))
            if dataset:
                query = query.where(ratings.c.dataset == dataset)
            rated = conn.execute(query.order_by(ratings.c.record_id)).all()
            units = load_units(conn, {r.conversation_id for r in rated})
        kept = [r for r in rated if (include_disagreement or not r.disagreement) and r.conversation_id in units]
        rows = [{
            "prompt": units[r.conversation_id].context, "response": [units[r.conversation_id].reply],
            **{a: getattr(r, a) for a in ATTRIBUTES},
            "context_id": context_id(units[r.conversation_id].context), "conversation_id": r.conversation_id,
            "cluster_id": units[r.conversation_id].cluster_id, "n_annotators": r.n_annotators,
            "annotators": loads(r.annotators) or [], "disagreement": bool(r.disagreement), "dataset": r.dataset,
            "run_id": r.run_id, "simulated": any(is_simulated(a, simulated_ids) for a in loads(r.annotators) or []),
        } for r in kept]
        if not rows:
            raise CurateError("no rated responses to export; pull ratings first (`curate annotate pull`)")
        train, test = split(rows, test_size, seed)
        manifest = {
            "kind": "ratings", "created_at": utcnow(), "format": fmt, "run_id": run_id, "dataset": dataset,
            "counts": {"rows": len(rows), "train": len(train), "test": len(test),
                       "simulated": sum(r["simulated"] for r in rows)},
            "agreement": {"records": len(rated), "disagreement_records": sum(1 for r in rated if r.disagreement),
                          "excluded_disagreement": sum(1 for r in rated if r.disagreement and not include_disagreement)},
            "rules": {"include_disagreement": include_disagreement, "test_size": test_size, "seed": seed},
            "source_runs": sorted({r.run_id for r in kept if r.run_id}), "mixed": [], "licence": LICENCE_NOTE,
        }
        return run.finish(write_export(store, out, fmt, "ratings", train, test, manifest, run_id, None))
