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
a content version) and a dataset card `README.md`, and is recorded in `preference_exports`. It writes only into an
empty folder or an earlier export (marked by `.curate-export`, written first), unless `overwrite`; never into the
Curate home itself.
"""
from __future__ import annotations

import hashlib
import math
import shutil
from collections import defaultdict
from dataclasses import asdict
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from annotations.order import swapped_records
from annotations.tables import annotation_records, rating_responses, ratings
from annotations.template import ATTRIBUTES
from curation.console import quiet
from curation.errors import CurateError, InputError
from curation.judge import latest_judgements
from curation.store import Store, dumps, loads, utcnow
from curation.store.failure_tables import cluster_assignments
from curation.store.tables import conversations, feedback
from loops.export_config import RULES, PairRules
from loops.judge_pairs import SOURCE as JUDGE
from loops.judge_pairs import judge_pairs
from loops.reward.data import read_rows, standardize_pair
from loops.reward.score import split_last_reply
from loops.simulate import is_simulated, simulated_annotators
from loops.tables import preference_exports

FORMATS = ("hf", "parquet", "jsonl")
MARKER = ".curate-export"  # written before anything else, so an interrupted export is still known as ours
# what an export writes, in any format: cleared before the next export into the same folder, so no stale split stays
OUTPUTS = (MARKER, "manifest.json", "README.md", "dataset_dict.json", "train", "test",
           *(f"{split}.{ext}" for split in ("train", "test") for ext in ("jsonl", "parquet")))
LICENCE_NOTE = ("Conversations come from your own traffic: check your users' terms and your privacy policy before "
                "sharing. Mixed-in sources keep their own licences (listed under `mixed`).")


def context_id(prompt: list[dict]) -> str:
    """A short content hash of a context (role and content of each message)."""
    canon = [[m.get("role"), m.get("content")] for m in prompt]
    return hashlib.sha256(orjson.dumps(canon)).hexdigest()[:16]


def _msg(message: dict) -> dict:
    """The columns we export for a message: role and text content (Arrow needs one struct shape)."""
    content = message.get("content")
    if not isinstance(content, str):
        content = "" if content is None else "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"role": message.get("role", "assistant"), "content": content}


def _units(conn: sa.Connection, ids: set[str]) -> dict[str, tuple[list[dict], dict, int | None]]:
    """conversation id → (context, last assistant reply, cluster id) for the ids that have a reply."""
    out: dict[str, tuple[list[dict], dict, int | None]] = {}
    ids_list = sorted(ids)
    for start in range(0, len(ids_list), 5_000):
        chunk = ids_list[start : start + 5_000]
        rows = conn.execute(
            sa.select(conversations.c.id, conversations.c.messages, cluster_assignments.c.cluster_id)
            .select_from(conversations.outerjoin(cluster_assignments,
                                                 cluster_assignments.c.conversation_id == conversations.c.id))
            .where(conversations.c.id.in_(chunk))
        ).all()
        for row in rows:
            unit = split_last_reply(loads(row.messages))
            if unit is not None:
                out[row.id] = ([_msg(m) for m in unit[0]], _msg(unit[1]), row.cluster_id)
    return out


def _pair(prompt: list[dict], chosen: dict, rejected: dict, margin: float, rule: str, **prov: Any) -> dict:
    row = {"prompt": prompt, "chosen": [chosen], "rejected": [rejected], "margin": float(margin), "rule": rule,
           "context_id": context_id(prompt), "conversation_id_chosen": None, "conversation_id_rejected": None,
           "cluster_id": None, "annotators": [], "disagreement": None, "dataset": None, "run_id": None,
           "source": "curate", "simulated": False}
    row.update(prov)
    return row


def _score(rating: Any, weights: dict[str, float] | None) -> float | None:
    if not weights:
        return rating.helpfulness
    values = [(getattr(rating, a), w) for a, w in weights.items()]
    return None if any(v is None for v, _ in values) else sum(v * w for v, w in values)


def build_pairs(store: Store, rules: PairRules, dataset: str | None = None) -> tuple[list[dict], dict]:
    """The pairs the rules make from the store's ratings (and feedback), with counts of what was dropped."""
    unknown = set(rules.rules) - set(RULES)
    if unknown:
        raise InputError(f"unknown pair rule(s) {', '.join(sorted(unknown))}; use {', '.join(RULES)}")
    stats: dict[str, Any] = defaultdict(int)
    with store.connect() as conn:
        query = sa.select(ratings)
        if dataset:
            query = query.where(ratings.c.dataset == dataset)
        consensus = conn.execute(query.order_by(ratings.c.record_id)).all()
        stats["records"] = len(consensus)
        stats["disagreement_records"] = sum(1 for r in consensus if r.disagreement)
        kept = [r for r in consensus if rules.include_disagreement or not r.disagreement]
        stats["excluded_disagreement"] = len(consensus) - len(kept)
        rewrites = []
        if "rewrite" in rules.rules:
            keep_ids = {r.record_id for r in kept}
            q = sa.select(rating_responses).where(rating_responses.c.status == "submitted",
                                                  rating_responses.c.rewrite.is_not(None))
            if dataset:
                q = q.where(rating_responses.c.dataset == dataset)
            rewrites = [r for r in conn.execute(q.order_by(rating_responses.c.id)).all()
                        if r.record_id in keep_ids and r.rewrite.strip()]
        fb = _feedback_labels(conn) if "feedback" in rules.rules else {}
        ids = {r.conversation_id for r in kept} | {r.conversation_id_b for r in kept if r.conversation_id_b}
        units = _units(conn, ids | set(fb))
        swapped = swapped_records(conn, dataset)  # shown with B's reply as response A
        simulated_ids = simulated_annotators(conn)
    source_runs = sorted({r.run_id for r in kept if r.run_id})
    pairs: list[dict] = []

    def simulated(names: list[str]) -> bool:
        return any(is_simulated(name, simulated_ids) for name in names)

    def prov(r: Any) -> dict:
        names = loads(r.annotators) or []
        return {"annotators": names, "disagreement": bool(r.disagreement), "dataset": r.dataset, "run_id": r.run_id,
                "simulated": simulated(names)}

    if "ratings" in rules.rules:  # (a)
        by_context: dict[str, list] = defaultdict(list)
        for r in kept:
            score = _score(r, rules.weights)
            if r.conversation_id_b is None and r.conversation_id in units and score is not None:
                by_context[context_id(units[r.conversation_id][0])].append((score, r))
        for group in by_context.values():
            for (s1, r1), (s2, r2) in combinations(sorted(group, key=lambda g: (-g[0], g[1].record_id)), 2):
                if units[r1.conversation_id][1]["content"] == units[r2.conversation_id][1]["content"]:
                    continue
                if s1 - s2 < rules.tie_threshold:
                    stats["ties_dropped"] += 1
                    continue
                ctx, chosen, cluster = units[r1.conversation_id]
                p = prov(r1)
                p["annotators"] = sorted(set(p["annotators"]) | set(loads(r2.annotators) or []))
                p["simulated"] = simulated(p["annotators"])
                pairs.append(_pair(ctx, chosen, units[r2.conversation_id][1], s1 - s2, "ratings", cluster_id=cluster,
                                   conversation_id_chosen=r1.conversation_id, conversation_id_rejected=r2.conversation_id,
                                   **p))
    if "preference" in rules.rules:  # (b)
        for r in kept:
            if r.conversation_id_b is None or r.preference is None:
                continue
            if abs(r.preference) < max(rules.preference_threshold, 1e-9):
                stats["no_preference_dropped"] += 1
                continue
            if r.conversation_id not in units or r.conversation_id_b not in units:
                stats["missing_conversation"] += 1
                continue
            a, b = (r.conversation_id_b, r.conversation_id) if r.record_id in swapped else (r.conversation_id, r.conversation_id_b)
            win, lose = (a, b) if r.preference < 0 else (b, a)  # negative: the response shown as A
            pairs.append(_pair(units[a][0], units[win][1], units[lose][1], abs(r.preference), "preference",
                               cluster_id=units[r.conversation_id][2], conversation_id_chosen=win, conversation_id_rejected=lose,
                               **prov(r)))
    for r in rewrites:  # (c) a rewrite of the response shown as A
        shown_a = r.conversation_id_b if r.record_id in swapped else r.conversation_id
        if shown_a not in units:
            stats["missing_conversation"] += 1
            continue
        ctx, original, cluster = units[shown_a]
        cluster = units[r.conversation_id][2] if r.conversation_id in units else cluster  # the routed one's cluster
        pairs.append(_pair(ctx, {"role": "assistant", "content": r.rewrite}, original, rules.rewrite_margin, "rewrite",
                           cluster_id=cluster, conversation_id_rejected=shown_a, annotators=[r.annotator],
                           disagreement=False, dataset=r.dataset, run_id=r.run_id, simulated=simulated([r.annotator])))
    if fb:  # (d)
        by_context = defaultdict(list)
        for cid, label in sorted(fb.items()):
            if cid in units:
                by_context[context_id(units[cid][0])].append((label, cid))
        for group in by_context.values():
            for label_up, up in group:
                for label_down, down in group:
                    if label_up > 0 > label_down and units[up][1]["content"] != units[down][1]["content"]:
                        pairs.append(_pair(units[up][0], units[up][1], units[down][1], rules.feedback_margin,
                                           "feedback", cluster_id=units[up][2], conversation_id_chosen=up,
                                           conversation_id_rejected=down))
    stats["source_runs"] = source_runs
    return pairs, dict(stats)


def _judge_pairs(store: Store, rules: PairRules, stats: dict) -> list[dict]:
    with store.connect() as conn:
        judged = latest_judgements(conn)
        units = _units(conn, set(judged))
    pairs, stats["judge_ties_dropped"] = judge_pairs(judged, units, context_id, _pair, rules.tie_threshold, rules.weights)
    return pairs


def _feedback_labels(conn: sa.Connection) -> dict[str, int]:
    """conversation id → +1 / −1 from explicit feedback on its last reply (conflicting events cancel out)."""
    votes: dict[str, int] = defaultdict(int)
    rows = conn.execute(sa.select(feedback.c.conversation_id, feedback.c.type, feedback.c.value)
                        .where(feedback.c.type.in_(("thumbs_up", "thumbs_down", "rating")), feedback.c.turn.is_(None)))
    for cid, kind, value in rows:
        if kind == "rating":
            v = loads(value)
            vote = 1 if isinstance(v, (int, float)) and v >= 4 else -1 if isinstance(v, (int, float)) and v <= 2 else 0
        else:
            vote = 1 if kind == "thumbs_up" else -1
        votes[cid] += vote
    return {cid: (1 if v > 0 else -1) for cid, v in votes.items() if v}


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
            rows.append(_pair([_msg(m) for m in p["prompt"]], _msg(p["chosen"][0]), _msg(p["rejected"][0]),
                              p.get("margin") if p.get("margin") is not None else 1.0, "mixed",
                              cluster_id=p.get("cluster_id"), source=source, simulated=bool(p.get("simulated"))))
        info.append({"source": source, "pairs": len(raw)})
    return rows, info


def _features(kind: str) -> Any:
    """Fixed column types, so that an empty split or an attribute nobody rated still has the same schema."""
    from datasets import Features, Value

    messages = [{"role": Value("string"), "content": Value("string")}]
    provenance = {"context_id": Value("string"), "cluster_id": Value("int64"), "annotators": [Value("string")],
                  "disagreement": Value("bool"), "dataset": Value("string"), "run_id": Value("string"),
                  "simulated": Value("bool")}
    if kind == "preferences":
        return Features({"prompt": messages, "chosen": messages, "rejected": messages, "margin": Value("float64"),
                         "rule": Value("string"), "conversation_id_chosen": Value("string"),
                         "conversation_id_rejected": Value("string"), "source": Value("string"), **provenance})
    return Features({"prompt": messages, "response": messages, **{a: Value("float64") for a in ATTRIBUTES},
                     "conversation_id": Value("string"), "n_annotators": Value("int64"), **provenance})


def _write(rows: dict[str, list[dict]], out: Path, fmt: str, kind: str) -> None:
    from datasets import Dataset, DatasetDict

    if fmt == "jsonl":
        for name, part in rows.items():
            (out / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in part))
        return
    features = _features(kind)
    # an empty split is left out of an hf folder: datasets cannot load an empty saved split back (`--test-size 0`);
    # readers take an absent split as empty
    parts = DatasetDict({name: Dataset.from_dict({k: [r[k] for r in part] for k in features}, features=features)
                         for name, part in rows.items() if part or name == "train" or fmt != "hf"})
    with quiet():  # datasets draws its own "Saving the dataset" bars, on a terminal or not
        if fmt == "hf":
            parts.save_to_disk(str(out))
        else:
            for name, part in parts.items():
                part.to_parquet(str(out / f"{name}.parquet"))


def check_out(store: Store, out: Path, overwrite: bool = False) -> None:
    """Refuse an `out` where an export would overwrite what is not ours: the Curate home itself (always), a file,
    or a folder that holds anything but an earlier export (unless `overwrite`)."""
    if out.resolve() == store.home.resolve():
        raise CurateError(f"--out {out} is the Curate home; write the export to a folder of its own, "
                          f"e.g. {store.home / 'exports' / 'NAME'}")
    if out.exists() and not out.is_dir():
        raise CurateError(f"--out {out} is a file; pick a folder (an empty or new one)")
    if overwrite or not out.exists() or _is_export(out) or not any(out.iterdir()):
        return
    raise CurateError(f"--out {out} is not empty and holds no earlier Curate export; pick an empty or new folder, "
                      "or pass --overwrite to write the export files into it anyway")


def _is_export(out: Path) -> bool:
    """An earlier export: the marker, or the manifest that exports made before there was a marker."""
    if (out / MARKER).is_file():
        return True
    try:
        manifest = orjson.loads((out / "manifest.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") in ("preferences", "ratings") and "version" in manifest


def _clear(out: Path) -> None:
    """Remove what an earlier export wrote (any format); nothing else in the folder is touched."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _finish(store: Store, out: Path, fmt: str, kind: str, train: list[dict], test: list[dict], manifest: dict,
            run_id: str, push_to_hub: str | None) -> dict:
    manifest["version"] = hashlib.sha256(b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS)
                                                  for r in train + test)).hexdigest()[:16]
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    (out / MARKER).write_bytes(orjson.dumps({"kind": kind, "run_id": run_id, "created_at": manifest["created_at"]}))
    _write({"train": train, "test": test}, out, fmt, kind)
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    (out / "README.md").write_text(_card(kind, manifest))
    if push_to_hub:
        from datasets import DatasetDict, load_from_disk

        try:
            data = load_from_disk(str(out)) if fmt == "hf" else DatasetDict.from_json(
                {s: str(out / f"{s}.jsonl") for s in ("train", "test")}) if fmt == "jsonl" else DatasetDict.from_parquet(
                {s: str(out / f"{s}.parquet") for s in ("train", "test")})
            data.push_to_hub(push_to_hub)
        except Exception as exc:  # network and auth errors come in many types
            raise CurateError(f"export written to {out}, but pushing to {push_to_hub} failed: {exc}; "
                              "check HF_TOKEN and network access (HF_HUB_OFFLINE must be unset)") from None
    summary = {"pairs" if kind == "preferences" else "rows": len(train) + len(test), "train": len(train),
               "test": len(test), "out": str(out), "version": manifest["version"],
               "simulated": manifest["counts"]["simulated"]}
    with store.begin() as conn:
        conn.execute(preference_exports.insert().values(
            out=str(out), pairs=len(train) + len(test), train=len(train), test=len(test), manifest=dumps(manifest),
            created_at=utcnow(), run_id=run_id))
    store.finish_run(run_id, "done", summary)
    return summary


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
    run_id = store.start_run("export", {"kind": "preferences", "out": str(out), "format": fmt, **asdict(rules)})
    try:
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
        return _finish(store, out, fmt, "preferences", train, test, manifest, run_id, push_to_hub)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise


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
    run_id = store.start_run("export", {"kind": "ratings", "out": str(out), "format": fmt})
    try:
        with store.connect() as conn:
            simulated_ids = simulated_annotators(conn)
            query = sa.select(ratings).where(ratings.c.conversation_id_b.is_(None))
            if dataset:
                query = query.where(ratings.c.dataset == dataset)
            rated = conn.execute(query.order_by(ratings.c.record_id)).all()
            units = _units(conn, {r.conversation_id for r in rated})
        kept = [r for r in rated if (include_disagreement or not r.disagreement) and r.conversation_id in units]
        rows = [{
            "prompt": units[r.conversation_id][0], "response": [units[r.conversation_id][1]],
            **{a: getattr(r, a) for a in ATTRIBUTES},
            "context_id": context_id(units[r.conversation_id][0]), "conversation_id": r.conversation_id,
            "cluster_id": units[r.conversation_id][2], "n_annotators": r.n_annotators,
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
        return _finish(store, out, fmt, "ratings", train, test, manifest, run_id, None)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise


def _card(kind: str, m: dict) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in m["counts"].items() if not isinstance(v, dict))
    lines = [
        "---", "license: other", f"tags: [curate, {'preference' if kind == 'preferences' else 'helpsteer2-ratings'}]",
        "configs:", "- config_name: default", "  data_files:",
        *(f"  - split: {s}\n    path: {s}.{'jsonl' if m['format'] == 'jsonl' else 'parquet'}" for s in ("train", "test")
          if m["format"] != "hf"),
        "---", "",
        f"# Curate {kind} export `{m['version']}`", "",
        f"Created {m['created_at']} by Curate run `{m['run_id']}`. Counts: {counts}.", "",
    ]
    if kind == "preferences":
        lines += [
            "Columns follow TRL's conversational preference format: `prompt` (messages), `chosen` and `rejected` (one "
            "assistant message each), `margin`; provenance: `rule`, `context_id`, `conversation_id_chosen`, "
            "`conversation_id_rejected`, `cluster_id`, `annotators`, `disagreement`, `dataset`, `run_id`, `source`, "
            "`simulated` (true when a simulated annotator's rating made the pair: not a person's judgement).", "",
            f"Pairs by rule: {m['counts']['by_rule']}. Rules and thresholds: `{orjson.dumps(m['rules']).decode()}`.", "",
        ]
        if "judge" in m["counts"]:
            lines += [f"{m['counts']['judge']} pairs come from the LLM judge, not from people (RLAIF): their "
                      "`source` = `judge` and `rule` = `judge`, and `annotators` names the judge (model@rubric).", ""]
    else:
        lines += ["Columns: `prompt` (messages), `response` (one assistant message), the HelpSteer2 attributes "
                  f"{', '.join(ATTRIBUTES)} (consensus means, 0–4, null when not rated), and provenance.", ""]
    lines += [
        f"Agreement: `{orjson.dumps(m['agreement']).decode()}`.",
        f"Split grouped by context (no prompt on both sides), stratified by cluster, seed {m['rules'].get('seed')}.", "",
        f"Source runs: {', '.join(m['source_runs']) or 'none'}. Mixed-in data: {m['mixed'] or 'none'}.", "",
        f"Licence: {m['licence']}", "",
    ]
    return "\n".join(lines)
