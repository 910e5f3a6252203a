"""Pair rules: which preference pairs the store's ratings (and production feedback) make.

Each rule is one function from the ratings to pairs (see `PairRules` and the rules listed in `loops.export`):
  (a) "ratings":    two or more responses rated on their own for the same context; score = helpfulness (or a weighted
                    sum of attributes); chosen = the higher, margin = the difference; ties (< `tie_threshold`) dropped.
  (b) "preference": a HelpSteer2-Preference strength −3…3 on a two-response record; negative = A is chosen.
  (c) "rewrite":    an annotator's rewrite ≻ the original response.
  (d) "feedback":   thumbs-up (or 4–5) ≻ thumbs-down (or 1–2) between sibling replies to the same context.
To add a rule: write a function `(Ratings, PairRules, stats) -> list[dict]` that makes rows with `make_pair`, add its
name to `loops.export_config.RULES`, and call it from `build_pairs`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Any, NamedTuple

import sqlalchemy as sa

from annotations.order import swapped_records
from annotations.tables import rating_responses, ratings
from curation.errors import InputError
from curation.messages import context_id, split_last_reply
from curation.store import Store, loads
from curation.store.failure_tables import cluster_assignments
from curation.store.tables import conversations, feedback
from loops.export_config import RULES, PairRules
from loops.simulate import is_simulated, simulated_annotators


def plain_message(message: dict) -> dict:
    """The columns we export for a message: role and text content (Arrow needs one struct shape)."""
    content = message.get("content")
    if not isinstance(content, str):
        content = "" if content is None else "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"role": message.get("role", "assistant"), "content": content}


class Unit(NamedTuple):
    """A conversation as the exports use it: its context, its last reply (both as `plain_message`s), its cluster."""

    context: list[dict]
    reply: dict
    cluster_id: int | None


def load_units(conn: sa.Connection, ids: set[str]) -> dict[str, Unit]:
    """conversation id → its Unit, for the ids that have a reply."""
    out: dict[str, Unit] = {}
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
                out[row.id] = Unit([plain_message(m) for m in unit[0]], plain_message(unit[1]), row.cluster_id)
    return out


def make_pair(prompt: list[dict], chosen: dict, rejected: dict, margin: float, rule: str, **prov: Any) -> dict:
    """One exported pair row in TRL's conversational columns, with its provenance (`prov` overrides the defaults)."""
    row = {"prompt": prompt, "chosen": [chosen], "rejected": [rejected], "margin": float(margin), "rule": rule,
           "context_id": context_id(prompt), "conversation_id_chosen": None, "conversation_id_rejected": None,
           "cluster_id": None, "annotators": [], "disagreement": None, "dataset": None, "run_id": None,
           "source": "curate", "simulated": False}
    row.update(prov)
    return row


@dataclass
class Ratings:
    """What the pair rules read from the store, in one transaction."""

    kept: list  # consensus rows (`ratings`) the rules may use
    rewrites: list  # submitted responses with a rewrite, of kept records
    feedback: dict[str, int]  # conversation id → +1 / −1 (rule d only)
    units: dict[str, Unit]
    swapped: set[str]  # records shown with B's reply as response A
    simulated_ids: set[str]

    def simulated(self, names: list[str]) -> bool:
        return any(is_simulated(name, self.simulated_ids) for name in names)

    def provenance(self, r: Any) -> dict:
        names = loads(r.annotators) or []
        return {"annotators": names, "disagreement": bool(r.disagreement), "dataset": r.dataset, "run_id": r.run_id,
                "simulated": self.simulated(names)}


def build_pairs(store: Store, rules: PairRules, dataset: str | None = None) -> tuple[list[dict], dict]:
    """The pairs the rules make from the store's ratings (and feedback), with counts of what was dropped."""
    unknown = set(rules.rules) - set(RULES)
    if unknown:
        raise InputError(f"unknown pair rule(s) {', '.join(sorted(unknown))}; use {', '.join(RULES)}")
    stats: dict[str, Any] = defaultdict(int)
    data = _read(store, rules, dataset, stats)
    pairs: list[dict] = []
    if "ratings" in rules.rules:
        pairs += rating_pairs(data, rules, stats)
    if "preference" in rules.rules:
        pairs += preference_pairs(data, rules, stats)
    pairs += rewrite_pairs(data, rules, stats)
    pairs += feedback_pairs(data, rules, stats)
    stats["source_runs"] = sorted({r.run_id for r in data.kept if r.run_id})
    return pairs, dict(stats)


def _read(store: Store, rules: PairRules, dataset: str | None, stats: dict) -> Ratings:
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
        units = load_units(conn, ids | set(fb))
        swapped = swapped_records(conn, dataset)
        simulated_ids = simulated_annotators(conn)
    return Ratings(kept, rewrites, fb, units, swapped, simulated_ids)


def _score(rating: Any, weights: dict[str, float] | None) -> float | None:
    if not weights:
        return rating.helpfulness
    values = [(getattr(rating, a), w) for a, w in weights.items()]
    return None if any(v is None for v, _ in values) else sum(v * w for v, w in values)


def rating_pairs(data: Ratings, rules: PairRules, stats: dict) -> list[dict]:
    """(a) Responses rated on their own for the same context, the higher score chosen."""
    units, pairs = data.units, []
    by_context: dict[str, list] = defaultdict(list)
    for r in data.kept:
        score = _score(r, rules.weights)
        if r.conversation_id_b is None and r.conversation_id in units and score is not None:
            by_context[context_id(units[r.conversation_id].context)].append((score, r))
    for group in by_context.values():
        for (s1, r1), (s2, r2) in combinations(sorted(group, key=lambda g: (-g[0], g[1].record_id)), 2):
            if units[r1.conversation_id].reply["content"] == units[r2.conversation_id].reply["content"]:
                continue
            if s1 - s2 < rules.tie_threshold:
                stats["ties_dropped"] += 1
                continue
            ctx, chosen, cluster = units[r1.conversation_id]
            p = data.provenance(r1)
            p["annotators"] = sorted(set(p["annotators"]) | set(loads(r2.annotators) or []))
            p["simulated"] = data.simulated(p["annotators"])
            pairs.append(make_pair(ctx, chosen, units[r2.conversation_id].reply, s1 - s2, "ratings",
                                   cluster_id=cluster, conversation_id_chosen=r1.conversation_id,
                                   conversation_id_rejected=r2.conversation_id, **p))
    return pairs


def preference_pairs(data: Ratings, rules: PairRules, stats: dict) -> list[dict]:
    """(b) A preference strength on a two-response record; its sign picks the chosen response."""
    units, pairs = data.units, []
    for r in data.kept:
        if r.conversation_id_b is None or r.preference is None:
            continue
        if abs(r.preference) < max(rules.preference_threshold, 1e-9):
            stats["no_preference_dropped"] += 1
            continue
        if r.conversation_id not in units or r.conversation_id_b not in units:
            stats["missing_conversation"] += 1
            continue
        a, b = ((r.conversation_id_b, r.conversation_id) if r.record_id in data.swapped
                else (r.conversation_id, r.conversation_id_b))
        win, lose = (a, b) if r.preference < 0 else (b, a)  # negative: the response shown as A
        pairs.append(make_pair(units[a].context, units[win].reply, units[lose].reply, abs(r.preference), "preference",
                               cluster_id=units[r.conversation_id].cluster_id, conversation_id_chosen=win,
                               conversation_id_rejected=lose, **data.provenance(r)))
    return pairs


def rewrite_pairs(data: Ratings, rules: PairRules, stats: dict) -> list[dict]:
    """(c) An annotator's rewrite of the response shown as A ≻ that response."""
    units, pairs = data.units, []
    for r in data.rewrites:
        shown_a = r.conversation_id_b if r.record_id in data.swapped else r.conversation_id
        if shown_a not in units:
            stats["missing_conversation"] += 1
            continue
        ctx, original, cluster = units[shown_a]
        cluster = units[r.conversation_id].cluster_id if r.conversation_id in units else cluster  # the routed one's
        pairs.append(make_pair(ctx, {"role": "assistant", "content": r.rewrite}, original, rules.rewrite_margin,
                               "rewrite", cluster_id=cluster, conversation_id_rejected=shown_a,
                               annotators=[r.annotator], disagreement=False, dataset=r.dataset, run_id=r.run_id,
                               simulated=data.simulated([r.annotator])))
    return pairs


def feedback_pairs(data: Ratings, rules: PairRules, stats: dict) -> list[dict]:
    """(d) Production feedback: a liked reply ≻ a disliked one to the same context."""
    units, pairs = data.units, []
    by_context: dict[str, list] = defaultdict(list)
    for cid, label in sorted(data.feedback.items()):
        if cid in units:
            by_context[context_id(units[cid].context)].append((label, cid))
    for group in by_context.values():
        for label_up, up in group:
            for label_down, down in group:
                if label_up > 0 > label_down and units[up].reply["content"] != units[down].reply["content"]:
                    pairs.append(make_pair(units[up].context, units[up].reply, units[down].reply,
                                           rules.feedback_margin, "feedback", cluster_id=units[up].cluster_id,
                                           conversation_id_chosen=up, conversation_id_rejected=down))
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
