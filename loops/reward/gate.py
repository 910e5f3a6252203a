"""The promotion gate: a challenger replaces the champion only if it is not worse on the fixed gate set.

"Not worse" is checked overall and on each of the largest clusters. "Worse" means the paired accuracy difference
(challenger − champion, on the same pairs) is below −max(tolerance, 1.96 · its standard error): a drop the gate set
is big enough to see. Every decision, promoted or rejected, is recorded in the registry's `promotions` with its
figures.
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
from loops.reward.evaluate import pair_wins
from loops.reward.model import RewardModel

GATE_FILE = "reward_gate.jsonl"


def promote(store: Store, challenger: str, gate: str | Path | None = None, tolerance: float = 0.0,
            top_clusters: int = 3, min_cluster_pairs: int = 30, force: bool = False,
            progress: bool | None = None) -> dict:
    """Run the gate for `challenger` (a version) against the champion; promote it if it passes (or `force`).

    The first `gate` file given is copied into the Curate home and stays the gate set until another is given.
    Returns {"decision", "challenger", "champion", "figures"}.
    """
    chal = registry.get(store, challenger)
    champ = registry.champion(store)
    gate_path = _fix_gate(store, gate)
    pairs = load_pairs(gate_path)
    if not pairs:
        raise InputError(f"the gate set {gate_path} has no pairs; pass --gate FILE.jsonl with held-out pairs")
    figures: dict = {"gate": str(gate_path), "gate_sha256": _sha256(gate_path), "n": len(pairs),
                     "tolerance": tolerance}
    wins_ch, _, _ = pair_wins(pairs, RewardModel(chal["path"]), progress)
    figures["challenger_accuracy"] = round(float(wins_ch.mean()), 4)
    checks = []
    if champ is not None and champ["version"] != challenger:
        wins_cp, _, _ = pair_wins(pairs, RewardModel(champ["path"]), progress)
        figures["champion_accuracy"] = round(float(wins_cp.mean()), 4)
        checks.append(_compare("overall", wins_ch, wins_cp, tolerance))
        clusters: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            if p.get("cluster_id") is not None:
                clusters.setdefault(str(p["cluster_id"]), []).append(i)
        largest = sorted(clusters.items(), key=lambda kv: -len(kv[1]))[:top_clusters]
        for name, idx in largest:
            if len(idx) >= min_cluster_pairs:
                checks.append(_compare(f"cluster {name}", wins_ch[idx], wins_cp[idx], tolerance))
    figures["checks"] = checks
    failed = [c["scope"] for c in checks if c["worse"]]
    decision = "promoted" if force or not failed else "rejected"
    figures["failed"] = failed
    figures["forced"] = bool(force and failed)
    registry.record_promotion(store, challenger, champ["version"] if champ else None, decision, figures)
    return {"decision": decision, "challenger": challenger, "champion": champ["version"] if champ else None,
            "figures": figures}


def _compare(scope: str, wins_ch: np.ndarray, wins_cp: np.ndarray, tolerance: float) -> dict:
    diff = wins_ch - wins_cp
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    allowed = max(tolerance, 1.96 * se)
    return {"scope": scope, "n": int(len(diff)), "challenger": round(float(wins_ch.mean()), 4),
            "champion": round(float(wins_cp.mean()), 4), "difference": round(float(diff.mean()), 4),
            "allowed_drop": round(allowed, 4), "worse": bool(diff.mean() < -allowed)}


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
