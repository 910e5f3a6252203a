"""Fit the failure model on the store's ratings, gate it against the prior, record it, and score with it.

    refresh(store)  # what `curate cluster` and `curate loop run` call: refit when ratings changed, else rescore

A rating is a failure by a rule over the five attributes (default `helpfulness <= 1 or correctness <= 1`); only
single-response records count (a preference record's attributes describe the response shown as A). The fit is
cross-validated with folds grouped by context (`curation.messages.context_key`: every message before the last reply),
so two replies to the same prompt never sit on both sides. The model replaces the prior only when its out-of-fold
average precision beats the prior's (`failure_score`) on the same rated conversations: a gate like `reward promote`.
Every fit is stored in `failure_models` with its CV figures and the ratings it saw, promoted or not; the scores of the
newest fit go to `failure_model_scores`, which curation reads: they rank only when that fit was promoted
(`curation.cluster.scorer`), while routing's `uncertain` share uses them either way, since teaching the model is its job.
"""
from __future__ import annotations

import hashlib
import io
import operator
import re
from dataclasses import dataclass

import joblib
import numpy as np
import sqlalchemy as sa
from sklearn.base import clone
from sklearn.metrics import average_precision_score, brier_score_loss
from threadpoolctl import threadpool_limits

from annotations.tables import ratings
from annotations.template import ATTRIBUTES
from curation.config import SettingError, resolve_fields
from curation.errors import ConfigError
from curation.messages import context_key
from curation.signals import load_scores
from curation.store import Store, dumps, loads, stored_messages, utcnow
from curation.store.failure_tables import cluster_assignments, failure_scores, rewards
from curation.store.model_tables import failure_model_scores, failure_models
from curation.store.tables import feedback
from loops.failures.judge_features import COLUMNS as JUDGE_COLUMNS
from loops.failures.judge_features import has_judgements, judge_columns, uses_judge
from loops.failures.metrics import calibration_bins, lift_at
from loops.failures.model import EMBEDDING, RATE, FailureModel, grouped_folds

DEFAULT_RULE = "helpfulness <= 1 or correctness <= 1"
MIN_CLASS = 5  # fewer failures (or successes) than this: no fit
CV_SPLITS = 5
LIFT_K = (10, 50, 100)
CHUNK = 10_000  # conversations scored per pass: peak memory 352 MiB at 10,000, 632 MiB at 50,000 (200k store)
FEEDBACK = ("thumbs_down", "thumbs_up", "flag", "rating", "comment", "regenerated", "edited", "abandoned")
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
_CLAUSE = re.compile(r"^\s*(\w+)\s*(<=|>=|==|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")


class FailureModelError(ConfigError):
    """The failure model cannot be fitted or used as asked."""


def parse_rule(rule: str):
    """`attr op number` clauses joined by `or` (and `and`, which binds tighter) -> f(ratings dict) -> bool | None.
    None when the rating has none of the attributes the rule names."""
    alternatives = []
    for part in re.split(r"\s+or\s+", rule.strip()):
        clauses = []
        for text in re.split(r"\s+and\s+", part):
            m = _CLAUSE.match(text)
            if not m or m.group(1) not in ATTRIBUTES:
                raise FailureModelError(f"failure rule {rule!r}: cannot read {text.strip()!r}; write clauses like "
                                        f"'helpfulness <= 1' over {', '.join(ATTRIBUTES)}, joined by 'or'/'and'")
            clauses.append((m.group(1), _OPS[m.group(2)], float(m.group(3))))
        alternatives.append(clauses)
    named = {a for clauses in alternatives for a, _, _ in clauses}

    def is_failure(values: dict) -> bool | None:
        if all(values.get(a) is None for a in named):
            return None
        return any(all(values.get(a) is not None and op(values[a], v) for a, op, v in clauses) for clauses in alternatives)
    return is_failure


@dataclass
class Features:
    """Feature matrix rows for some conversations; columns = tabular names, then cluster id, then embedding."""
    ids: list[str]
    X: np.ndarray
    names: list[str]  # the tabular columns' names
    prior: np.ndarray  # the prior's failure_score, for the gate


def load_labels(store: Store, rule: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """({conversation_id: 1 failure / 0 not}, [(record_id, updated_at) seen]) over single-response ratings."""
    is_failure = parse_rule(rule)
    cols = [ratings.c.record_id, ratings.c.updated_at, ratings.c.conversation_id, *(ratings.c[a] for a in ATTRIBUTES)]
    labels: dict[str, list[int]] = {}
    seen = []
    with store.connect() as conn:
        for row in conn.execute(sa.select(*cols).where(ratings.c.conversation_id_b.is_(None)).order_by(ratings.c.record_id)):
            verdict = is_failure(dict(zip(ATTRIBUTES, row[3:])))
            if verdict is not None:
                labels.setdefault(row.conversation_id, []).append(int(verdict))
                seen.append((row.record_id, row.updated_at))
    return {c: int(np.mean(v) >= 0.5) for c, v in labels.items()}, seen


def digest(seen: list[tuple[str, str]]) -> str:
    return hashlib.sha256(dumps(seen).encode()).hexdigest()


def build_features(store: Store, ids: list[str] | None = None, signal_names: list[str] | None = None,
                   shared: dict | None = None, judge: bool | None = None) -> Features:
    """Features of the given conversations (all scored ones when None). Signal columns: `signal_names`, or every
    signal seen in `failure_scores` (a fit fixes them; scoring reuses the fit's). The judge's columns come last when
    `judge` (None: when the store holds judgements). `shared` (from `shared_inputs`) saves reading the rewards and
    the embedding spaces again for each chunk."""
    shared = shared if shared is not None else shared_inputs(store)
    judge = has_judgements(store) if judge is None else judge
    scores = load_scores(store, ids)
    ids = sorted(scores) if ids is None else [i for i in ids if i in scores]
    if signal_names is None:
        signal_names = sorted({s["name"] for _, sig in scores.values() for s in sig})
    col = {n: j for j, n in enumerate(signal_names)}
    names = ["prior failure score", *signal_names, *(f"{t} count" for t in FEEDBACK), "has reward", "reward percentile",
             *(JUDGE_COLUMNS if judge else [])]
    tab = np.zeros((len(ids), len(names)), dtype=np.float32)
    for i, cid in enumerate(ids):
        score, sig = scores[cid]
        tab[i, 0] = score
        for s in sig:
            if s["name"] in col:
                tab[i, 1 + col[s["name"]]] = s["value"]
    tab[:, 1 + len(signal_names) : 1 + len(signal_names) + len(FEEDBACK)] = _feedback_counts(store, ids)
    reward, at = shared["reward"], 1 + len(signal_names) + len(FEEDBACK)
    if reward:
        for i, cid in enumerate(ids):
            if cid in reward:
                tab[i, at : at + 2] = (1.0, reward[cid])
    if judge:
        tab[:, at + 2 :] = judge_columns(store, ids)
    cluster = _clusters_of(store, ids)
    emb = _embeddings(store, ids, shared["space"])
    X = np.column_stack([tab, cluster.astype(np.float32), emb])
    return Features(ids, X, names, tab[:, 0].astype(float))


def emphasised(names: list[str]) -> tuple[int, ...]:
    """The columns the fit penalises least: the prior's, and the judge's verdict (its signal's column) where the
    store holds judgements. Each is a whole source whose weight the ratings should be free to set, from "ignore it"
    to "trust it almost fully"; the judge's five attributes and every other feature stay under the full penalty
    and only correct them."""
    return (0, names.index("judge")) if "judge" in signals_of(names) else (0,)


def signals_of(names: list[str]) -> list[str]:
    """A fit's signal columns: those between the prior and the first feedback count."""
    return names[1 : names.index(f"{FEEDBACK[0]} count")]


def _feedback_counts(store: Store, ids: list[str]) -> np.ndarray:
    """log(1 + events) of each explicit and implicit feedback type, per conversation (signals saturate; counts not)."""
    where = {c: i for i, c in enumerate(ids)}
    out = np.zeros((len(ids), len(FEEDBACK)), dtype=np.float32)
    col = {t: j for j, t in enumerate(FEEDBACK)}
    with store.connect() as conn:
        for start in range(0, len(ids), 5_000):
            for cid, kind, n in conn.execute(
                sa.select(feedback.c.conversation_id, feedback.c.type, sa.func.count())
                .where(feedback.c.conversation_id.in_(ids[start : start + 5_000]))
                .group_by(feedback.c.conversation_id, feedback.c.type)):
                if kind in col:
                    out[where[cid], col[kind]] = np.log1p(n)
    return out


def shared_inputs(store: Store) -> dict:
    """What every chunk's features share: the champion's reward percentiles and the newest embedding space."""
    from curation.embed import spaces

    known = spaces(store)
    return {"reward": _reward_percentiles(store), "space": known[0]["name"] if known else None}


def _reward_percentiles(store: Store) -> dict[str, float]:
    """The champion's (newest reward model's) rewards as percentiles, or {} when no reward model scored yet."""
    with store.connect() as conn:
        version = conn.execute(sa.select(rewards.c.model_version).order_by(rewards.c.scored_at.desc()).limit(1)).scalar()
        if version is None:
            return {}
        rows = conn.execute(sa.select(rewards.c.conversation_id, rewards.c.reward)
                            .where(rewards.c.model_version == version)).all()
    values = np.array([r[1] for r in rows], dtype=float)
    pct = values.argsort().argsort() / max(1, len(values) - 1)
    return {r[0]: float(p) for r, p in zip(rows, pct)}


def _clusters_of(store: Store, ids: list[str]) -> np.ndarray:
    out = {}
    with store.connect() as conn:
        for start in range(0, len(ids), 5_000):
            chunk = ids[start : start + 5_000]
            out.update(conn.execute(sa.select(cluster_assignments.c.conversation_id, cluster_assignments.c.cluster_id)
                                    .where(cluster_assignments.c.conversation_id.in_(chunk))).all())
    return np.array([out.get(i, -1) for i in ids], dtype=np.int64)


def _embeddings(store: Store, ids: list[str], space: str | None) -> np.ndarray:
    """The space's vectors in `ids` order (zeros for conversations without one); (n, 0) with no space."""
    from curation.embed import load_vectors

    if space is None or not ids:
        return np.zeros((len(ids), 0), dtype=np.float32)
    found, V = load_vectors(store, space, ids)
    out = np.zeros((len(ids), V.shape[1]), dtype=np.float32)
    where = {c: i for i, c in enumerate(ids)}
    out[[where[c] for c in found]] = V
    return out


def contexts(store: Store, ids: list[str]) -> np.ndarray:
    """Each conversation's context key (the grouping of the cross-validation)."""
    keys = {}
    with store.connect() as conn:
        for cid, messages in stored_messages(conn, ids):
            keys[cid] = context_key(loads(messages)) or cid
    return np.array([keys.get(i, i) for i in ids])


def cross_validate(model: FailureModel, X: np.ndarray, y: np.ndarray, groups: np.ndarray, prior: np.ndarray) -> dict:
    """Out-of-fold P(failure) on grouped folds, and the figures of the model and of the prior on the same rows."""
    folds = grouped_folds(y, groups, CV_SPLITS)
    oof = np.full(len(y), np.nan)
    ap, prior_ap = [], []
    for tr, te in folds:
        oof[te] = clone(model).fit(X[tr], y[tr], groups=groups[tr]).predict_proba(X[te])[:, 1]
        if y[te].any():  # AP per held-out fold, then averaged: each fold's scores share one fitted scale
            ap.append(average_precision_score(y[te], oof[te]))
            prior_ap.append(average_precision_score(y[te], prior[te]))
    held = ~np.isnan(oof)
    yh, ph, prior_h = y[held], oof[held], prior[held]
    return {
        "folds": len(folds), "grouped_by": "context (every message before the last reply)",
        "n": int(held.sum()), "groups": int(len(np.unique(groups))), "base_rate": round(float(yh.mean()), 4),
        "ap": round(float(np.mean(ap)), 4), "prior_ap": round(float(np.mean(prior_ap)), 4),
        "ap_folds": [round(float(a), 4) for a in ap], "prior_ap_folds": [round(float(a), 4) for a in prior_ap],
        "lift": {str(k): lift_at(ph, yh, k) for k in LIFT_K if k <= len(yh)},
        "prior_lift": {str(k): lift_at(prior_h, yh, k) for k in LIFT_K if k <= len(yh)},
        "brier": round(float(brier_score_loss(yh, ph)), 4),
        "calibration": calibration_bins(ph, yh),
    }


def fit_failure_model(store: Store, rule: str = DEFAULT_RULE, model: FailureModel | None = None,
                      random_state: int = 0) -> dict:
    """Fit, cross-validate, gate and record one version; score the store with it when promoted. Returns its record."""
    labels, seen = load_labels(store, rule)
    feats = build_features(store, sorted(labels))
    y = np.array([labels[c] for c in feats.ids], dtype=int)
    n_fail = int(y.sum())
    if min(n_fail, len(y) - n_fail) < MIN_CLASS:
        raise FailureModelError(f"{len(y)} rated conversations ({n_fail} failures by {rule!r}): the failure model needs "
                                f"at least {MIN_CLASS} failures and {MIN_CLASS} non-failures; rate more (`curate annotate "
                                f"push`, then pull, or `curate annotate import`)")
    with store.run("failure_model", {"rule": rule, "ratings": len(seen)}) as run:
        summary = _fit(store, rule, model, random_state, feats, y, seen, n_fail, run.id)
        run.finish({k: v for k, v in summary.items() if k != "features"})
    return summary


def _fit(store: Store, rule: str, model: FailureModel | None, random_state: int, feats: Features, y: np.ndarray,
         seen: list, n_fail: int, run_id: str) -> dict:
    # one BLAS thread: the matrices are small (ratings × a few dozen), and several threads only spin and, on a
    # loaded machine, oversubscribe it (a 2,000-rating fit took 15 s with the default threads, 5 s with one)
    with threadpool_limits(limits=1):
        model = model if model is not None else FailureModel(n_tabular=len(feats.names), random_state=random_state,
                                                             emphasised=emphasised(feats.names))
        groups = contexts(store, feats.ids)
        cv = cross_validate(model, feats.X, y, groups, feats.prior)
        fitted = clone(model).fit(feats.X, y, groups=groups)
        promoted = cv["ap"] > cv["prior_ap"]
        reason = (f"cross-validated average precision {cv['ap']:.3f} {'beats' if promoted else 'does not beat'} the "
                  f"prior's {cv['prior_ap']:.3f} on the same {cv['n']} rated conversations")
        buffer = io.BytesIO()
        joblib.dump({"model": fitted, "names": feats.names}, buffer)
        with store.begin() as conn:
            version = (conn.execute(sa.select(sa.func.max(failure_models.c.version))).scalar() or 0) + 1
            record = {"version": version, "created_at": utcnow(), "run_id": run_id, "rule": rule, "n_ratings": len(y),
                      "n_failures": n_fail, "ratings_digest": digest(seen), "ratings_seen": dumps([r for r, _ in seen]),
                      "ratings_until": max((u or "" for _, u in seen), default=None),
                      "features": dumps([*feats.names, RATE, EMBEDDING]), "cv": dumps(cv), "promoted": int(promoted),
                      "reason": reason, "model": buffer.getvalue()}
            conn.execute(failure_models.insert(), [record])
        scored = score_with(store, version, fitted, feats.names)  # routing's uncertain share reads them either way
    summary = {**{k: v for k, v in record.items() if k not in ("model", "ratings_seen")},
               "features": loads(record["features"]), "cv": cv, "promoted": promoted, "scored": scored}
    return summary


def _clear_scores(store: Store) -> int:
    with store.begin() as conn:
        conn.execute(failure_model_scores.delete())
    return 0


def score_with(store: Store, version: int, model: FailureModel, names: list[str], chunk: int = CHUNK) -> int:
    """Replace `failure_model_scores` with this model's P(failure) of every scored conversation, `chunk` at a time."""
    signal_names = signals_of(names)
    with store.connect() as conn:
        ids = sorted(conn.execute(sa.select(failure_scores.c.conversation_id)).scalars())
    _clear_scores(store)
    now, done, shared = utcnow(), 0, shared_inputs(store)
    for start in range(0, len(ids), chunk):
        feats = build_features(store, ids[start : start + chunk], signal_names, shared, uses_judge(names))
        with threadpool_limits(limits=1):
            p = model.predict_proba(feats.X)[:, 1]
        rows = [{"conversation_id": c, "model_version": version, "probability": round(float(q), 6),
                 "uncertainty": round(float(4 * q * (1 - q)), 6), "scored_at": now} for c, q in zip(feats.ids, p)]
        with store.begin() as conn:
            conn.execute(failure_model_scores.insert(), rows)
        done += len(rows)
    return done


def latest_fit(store: Store) -> dict | None:
    with store.connect() as conn:
        row = conn.execute(sa.select(failure_models).order_by(failure_models.c.version.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


def load_model(record: dict) -> tuple[FailureModel, list[str]]:
    saved = joblib.load(io.BytesIO(record["model"]))
    return saved["model"], saved["names"]


@dataclass
class FailureModelSettings:
    """curate.toml `[failure_model]`."""

    rule: str = DEFAULT_RULE  # which ratings count as failures (`parse_rule`)


def resolve_rule(store: Store, rule: str | None = None) -> str:
    """The failure rule: `rule` > env CURATE_FAILURE_RULE > curate.toml [failure_model] rule > the default. A rule
    that does not parse is a usage error (SettingError) naming where it came from."""
    values, origin = resolve_fields(FailureModelSettings, store.home, "failure_model",
                                    {"rule": "CURATE_FAILURE_RULE"}, {"rule": rule or None})
    chosen = values.get("rule") or DEFAULT_RULE
    try:
        parse_rule(chosen)
    except FailureModelError as exc:
        raise SettingError(f"{exc} ({origin['rule']})" if rule is None else str(exc)) from None
    return chosen


def refresh(store: Store, rule: str | None = None) -> dict:
    """Refit when the ratings changed since the last fit (and enough exist); else rescore with the model in force.
    Returns {"refit": bool, "version", "promoted", "scored", "reason"} (and the fit's record when it refitted)."""
    rule = resolve_rule(store, rule)
    labels, seen = load_labels(store, rule)
    last = latest_fit(store)
    if last is None or last["ratings_digest"] != digest(seen) or last["rule"] != rule:
        n_fail = sum(labels.values())
        if min(n_fail, len(labels) - n_fail) < MIN_CLASS:
            return {"refit": False, "version": None, "promoted": False, "scored": 0,
                    "reason": f"{len(labels)} rated conversations, {n_fail} failures: too few to fit (needs "
                              f"{MIN_CLASS} of each); the prior ranks"}
        return {"refit": True, **fit_failure_model(store, rule)}
    scored = score_with(store, last["version"], *load_model(last))
    return {"refit": False, "version": last["version"], "promoted": bool(last["promoted"]), "scored": scored,
            "reason": "no new ratings since version " + str(last["version"])}


def explain(store: Store, conversation_id: str, top: int = 3) -> dict:
    """Why the model in force gives this conversation its P(failure): the features that pushed it up (log-odds),
    the top signals, and the nearest rated failures by embedding."""
    last = latest_fit(store)
    if last is None or not last["promoted"]:
        raise FailureModelError("no learned failure model is in force; the prior ranks (see `curate clusters --json`)")
    model, names = load_model(last)
    feats = build_features(store, [conversation_id], signals_of(names), judge=uses_judge(names))
    if not feats.ids:
        raise FailureModelError(f"conversation {conversation_id!r} has no failure score yet; run `curate cluster`")
    push = model.contributions(feats.X)[0]
    labels = [*names, RATE, EMBEDDING]
    pushed = sorted(({"feature": n, "log_odds": round(float(v), 4)} for n, v in zip(labels, push)),
                    key=lambda r: -r["log_odds"])
    signals = sorted(load_scores(store, [conversation_id])[conversation_id][1], key=lambda s: -s["value"] * s["weight"])
    return {"conversation_id": conversation_id, "model_version": last["version"],
            "probability": round(float(model.predict_proba(feats.X)[0, 1]), 4),
            "pushed_up": [r for r in pushed if r["log_odds"] > 0][:top], "top_signals": signals[:top],
            "nearest_rated_failures": _nearest_failures(store, conversation_id, last["rule"], top)}


def _nearest_failures(store: Store, conversation_id: str, rule: str, top: int) -> list[dict]:
    labels, _ = load_labels(store, rule)
    failed = sorted(c for c, y in labels.items() if y and c != conversation_id)
    E = _embeddings(store, [conversation_id, *failed], shared_inputs(store)["space"])
    if E.shape[1] == 0 or not failed:
        return []
    sim = E[1:] @ E[0]
    return [{"conversation_id": failed[i], "similarity": round(float(sim[i]), 4)} for i in np.argsort(-sim)[:top]]
