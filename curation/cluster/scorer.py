"""Which scorer ranks: the learned failure model when its newest fit passed the gate, else the prior.

The learned model (`loops.failures`) writes its fits to `failure_models` and the P(failure) of its newest fit to
`failure_model_scores`; curation only reads them, so it needs nothing from loops.
"""
from __future__ import annotations

import sqlalchemy as sa

from curation.store import Store, loads
from curation.store.model_tables import failure_model_scores, failure_models

PRIOR = "failure signals (prior): noisy-OR of the detectors' weighted signals, failing at ≥ 0.5"


def active_scorer(store: Store) -> dict:
    """{"name": "learned" | "prior", "description", "reason", and for a fit: "version", "rule", "n_ratings",
    "n_failures", "cv", "promoted", "created_at"} — what `curate clusters --json` shows as "scorer"."""
    cols = [c for c in failure_models.c if c.name not in ("model", "ratings_seen")]
    with store.connect() as conn:
        fit = conn.execute(sa.select(*cols).order_by(failure_models.c.version.desc()).limit(1)).first()
        scored = fit is not None and conn.execute(
            sa.select(failure_model_scores.c.conversation_id)
            .where(failure_model_scores.c.model_version == fit.version).limit(1)).first() is not None
    if fit is None:
        return {"name": "prior", "description": PRIOR,
                "reason": "no failure model fitted yet (it needs ratings: push, rate and pull, or `curate annotate import`)"}
    record = {"version": fit.version, "rule": fit.rule, "n_ratings": fit.n_ratings, "n_failures": fit.n_failures,
              "created_at": fit.created_at, "promoted": bool(fit.promoted), "cv": loads(fit.cv), "reason": fit.reason}
    if fit.promoted and scored:
        return {"name": "learned", "description": f"learned failure model v{fit.version}: calibrated P(failure) from "
                f"{fit.n_ratings} ratings; a cluster's failures are the sum of its members' P(failure)", **record}
    return {"name": "prior", "description": PRIOR, **record}


def uses_learned(store: Store) -> bool:
    return active_scorer(store)["name"] == "learned"


def fit_history(store: Store) -> list[dict]:
    """Every fit, oldest first, with its cross-validated figures: the failure model's learning curve."""
    cols = [failure_models.c[n] for n in ("version", "created_at", "n_ratings", "n_failures", "promoted", "cv", "reason")]
    with store.connect() as conn:
        rows = conn.execute(sa.select(*cols).order_by(failure_models.c.version)).all()
    out = []
    for r in rows:
        cv = loads(r.cv) or {}
        out.append({"version": r.version, "created_at": r.created_at, "n_ratings": r.n_ratings,
                    "n_failures": r.n_failures, "promoted": bool(r.promoted), "ap": cv.get("ap"),
                    "prior_ap": cv.get("prior_ap"), "lift": cv.get("lift", {}), "prior_lift": cv.get("prior_lift", {}),
                    "brier": cv.get("brier")})
    return out
