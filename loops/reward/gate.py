"""The promotion gate: a challenger becomes the champion only if, on the same fixed gate pairs, it is

1. not below the "longer answer wins" baseline by more than `tolerance` (a model that does not beat the trivial
   heuristic has not learned what the raters prefer, however it compares with the champion);
2. not below the champion by more than `tolerance`, overall;
3. not significantly worse than the champion on each of the `top_clusters` largest clusters with at least
   `min_cluster_pairs` pairs: a drop larger than max(tolerance, 1.96 × the standard error of the paired difference).

Checks 1 and 2 compare accuracies as measured: on a small gate set a lower score is not proof of a worse model, but
keeping the champion is the safe side of that doubt. Check 3 allows for noise because each cluster is a small slice
and there are several of them. Each check records the difference, its 95% interval (normal approximation of the
paired difference) and the drop it allowed. Every decision, promoted or rejected, is recorded in the registry's
`promotions` with its figures and a one-line reason.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import orjson

from curation.errors import InputError
from curation.store import Store
from loops import registry
from loops.reward.data import load_pairs, read_rows
from loops.reward.evaluate import length_baseline, pair_wins
from loops.reward.model import RewardModel

GATE_FILE = "reward_gate.jsonl"
Z = 1.96
SMALL_GATE = 50  # below this many pairs the decision is printed with a warning that the gate set can tell little
RULE = ("promoted only if, on the same gate pairs, its accuracy is at least the longer-answer baseline's and the "
        "champion's minus the tolerance, and it is not significantly worse than the champion on a large cluster")


def promote(store: Store, challenger: str, gate: str | Path | None = None, tolerance: float = 0.0,
            top_clusters: int = 3, min_cluster_pairs: int = 30, force: bool = False,
            progress: bool | None = None) -> dict:
    """Run the gate for `challenger` (a version, or the folder it was trained into) against the champion; promote
    it if it passes (or `force`).

    The first `gate` file given is copied into the Curate home and stays the gate set until another is given.
    Returns {"decision", "challenger", "champion", "reason", "figures"}.
    """
    chal = registry.get(store, challenger)
    challenger = chal["version"]
    champ = registry.champion(store)
    gate_path = _fix_gate(store, gate)
    pairs = load_pairs(gate_path)
    if not pairs:
        raise InputError(f"the gate set {gate_path} has no pairs; pass --gate FILE.jsonl with held-out pairs")
    wins_ch, _, _ = pair_wins(pairs, RewardModel(chal["path"]), progress)
    rival = champ is not None and champ["version"] != challenger
    wins_cp = pair_wins(pairs, RewardModel(champ["path"]), progress)[0] if rival else None
    figures = {"gate": str(gate_path), "gate_sha256": _sha256(gate_path), "n": len(pairs), "tolerance": tolerance,
               "challenger_accuracy": round(float(wins_ch.mean()), 4)}
    figures.update(decide(wins_ch, wins_cp, length_baseline(pairs), [p.get("cluster_id") for p in pairs],
                          tolerance, top_clusters, min_cluster_pairs))
    decision = "promoted" if force or not figures["failed"] else "rejected"
    figures["forced"] = bool(force and figures["failed"])
    figures["reason"] = reason(decision, figures)
    registry.record_promotion(store, challenger, champ["version"] if champ else None, decision, figures)
    return {"decision": decision, "challenger": challenger, "champion": champ["version"] if champ else None,
            "reason": figures["reason"], "figures": figures}


def decide(wins_ch: np.ndarray, wins_cp: np.ndarray | None, longer: np.ndarray, clusters: list, tolerance: float,
           top_clusters: int = 3, min_cluster_pairs: int = 30) -> dict:
    """The gate's checks on per-pair wins (1, ½ for a tie, 0); `wins_cp` is None when there is no champion yet."""
    checks = [_check("length baseline", "longer-answer baseline", wins_ch, longer, tolerance, noise=False)]
    out = {"length_baseline": round(float(longer.mean()), 4)}
    if wins_cp is not None:
        out["champion_accuracy"] = round(float(wins_cp.mean()), 4)
        checks.insert(0, _check("overall", "champion", wins_ch, wins_cp, tolerance, noise=False))
        groups: dict[str, list[int]] = {}
        for i, cid in enumerate(clusters):
            if cid is not None:
                groups.setdefault(str(cid), []).append(i)
        for name, idx in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:top_clusters]:
            if len(idx) >= min_cluster_pairs:
                checks.append(_check(f"cluster {name}", "champion", wins_ch[idx], wins_cp[idx], tolerance, noise=True))
    return {**out, "checks": checks, "failed": [c["scope"] for c in checks if c["worse"]]}


def _check(scope: str, against: str, wins: np.ndarray, other: np.ndarray, tolerance: float, noise: bool) -> dict:
    diff = wins - other
    mean = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    allowed = max(tolerance, Z * se) if noise else tolerance
    return {"scope": scope, "against": against, "n": int(len(diff)), "challenger": round(float(wins.mean()), 4),
            "other": round(float(other.mean()), 4), "difference": round(mean, 4),
            "ci_low": round(max(-1.0, mean - Z * se), 4), "ci_high": round(min(1.0, mean + Z * se), 4),
            "allowed_drop": round(allowed, 4),
            "allowance": "1.96 × standard error" if noise and Z * se > tolerance else "tolerance",
            "worse": bool(mean < -allowed - 1e-12)}


def reason(decision: str, figures: dict) -> str:
    """One line saying why: the first failed check, or what the challenger passed."""
    n, tol = figures["n"], figures["tolerance"]
    failed = [c for c in figures["checks"] if c["worse"]]
    if failed:
        c = failed[0]
        what = (f"{c['challenger']:.3f} is below the {c['against']}'s {c['other']:.3f} on the same {c['n']} "
                f"{'gate pairs' if c['scope'] in ('overall', 'length baseline') else c['scope'] + ' pairs'} "
                f"by more than the allowed {c['allowed_drop']:.3f} ({c['allowance']})")
        return (f"promoted (forced) although {what}" if decision == "promoted" else f"rejected: {what}")
    rivals = " and ".join(f"{c['against']} {c['other']:.3f}" for c in figures["checks"] if c["scope"] in ("overall", "length baseline"))
    half = max(c["ci_high"] - c["difference"] for c in figures["checks"])
    note = (f"; only {n} gate pairs, so a difference smaller than about {half:.2f} could be chance: add held-out "
            "pairs for a gate that can tell" if n < SMALL_GATE else "")
    return f"promoted: {figures['challenger_accuracy']:.3f} vs {rivals} on {n} gate pairs (tolerance {tol:g}){note}"


def explain(figures: dict) -> list[str]:
    """One line per check: the two accuracies, the difference with its 95% interval, the drop allowed and the verdict."""
    return [f"{c['scope']}: {c['challenger']:.3f} vs {c['against']} {c['other']:.3f} on {c['n']} pairs: "
            f"{c['difference']:+.3f} (95% CI {c['ci_low']:+.3f} to {c['ci_high']:+.3f}); allowed drop "
            f"{c['allowed_drop']:.3f} ({c['allowance']}) → {'worse' if c['worse'] else 'passes'}"
            for c in figures["checks"]]


def _fix_gate(store: Store, gate: str | Path | None) -> Path:
    fixed = store.home / GATE_FILE
    if gate is not None:
        gate = Path(gate)
        if gate.is_dir():  # an export folder: its test split is the gate set
            fixed.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in read_rows(gate, "test")))
        elif not gate.exists():
            raise InputError(f"gate set {gate} does not exist; pass a TRL-format JSONL of held-out pairs")
        elif gate.resolve() != fixed.resolve():
            shutil.copyfile(gate, fixed)
    if not fixed.exists():
        raise InputError("no gate set yet; pass --gate FILE.jsonl (held-out pairs, e.g. an export's test split); "
                         "it stays the fixed gate set for later promotions")
    return fixed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
