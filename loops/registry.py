"""The reward-model registry: every trained model with its data version and metrics, and the promotion gate.

A challenger replaces the champion only if it is not worse on the fixed gate set, overall and on each of the
largest clusters. "Worse" means the paired accuracy difference (challenger − champion, on the same pairs) is
below −max(tolerance, 1.96 · its standard error): a drop the gate set is big enough to see. Every decision,
promoted or rejected, is recorded in `promotions` with its figures.
"""
from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from curation.errors import CurateError, InputError
from curation.store import Store, dumps, loads, utcnow
from loops.tables import promotions, reward_models

GATE_FILE = "reward_gate.jsonl"


class RegistryError(CurateError):
    """A model version is unknown, or the registry has no champion yet."""


def register(store: Store, path: str | Path, base: str | None, loss: str, data_version: str | None,
             metrics: dict, run_id: str | None = None) -> str:
    """Record a trained model as a candidate; returns its version."""
    version = f"rm-{utcnow()[:19].replace('-', '').replace(':', '')}-{loss}-{uuid.uuid4().hex[:6]}"
    with store.begin() as conn:
        conn.execute(reward_models.insert().values(
            version=version, path=str(Path(path).resolve()), base=base, loss=loss, data_version=data_version,
            metrics=dumps(metrics), status="candidate", created_at=utcnow(), run_id=run_id,
        ))
    return version


def list_models(store: Store) -> list[dict]:
    with store.connect() as conn:
        rows = conn.execute(sa.select(reward_models).order_by(reward_models.c.created_at)).mappings().all()
    return [_as_dict(row) for row in rows]


def get(store: Store, version: str) -> dict:
    with store.connect() as conn:
        row = conn.execute(sa.select(reward_models).where(reward_models.c.version == version)).mappings().first()
    if row is None:
        raise RegistryError(f"no reward model {version!r} in the registry; see `curate reward list`")
    return _as_dict(row)


def _as_dict(row: sa.RowMapping) -> dict:
    # Column names come back as sqlalchemy's `quoted_name` (a str subclass), which JSON encoders refuse.
    return {str(k): (loads(v) if k == "metrics" else v) for k, v in row.items()}


def champion(store: Store) -> dict | None:
    with store.connect() as conn:
        row = conn.execute(sa.select(reward_models).where(reward_models.c.status == "champion")).mappings().first()
    return None if row is None else _as_dict(row)


def resolve_model(store: Store, model: str | Path | None) -> tuple[str, Path]:
    """(model_version, folder) for a version, a checkpoint folder or None (the champion)."""
    if model is None:
        champ = champion(store)
        if champ is None:
            raise RegistryError("no champion reward model yet; train one and run `curate reward promote VERSION`, "
                                "or pass --model DIR")
        return champ["version"], Path(champ["path"])
    path = Path(model)
    if not path.exists():
        return str(model), Path(get(store, str(model))["path"])
    with store.connect() as conn:
        version = conn.execute(
            sa.select(reward_models.c.version).where(reward_models.c.path == str(path.resolve()))
        ).scalar()
    # An unregistered folder is named by its content, so re-scoring with a changed model is a new version.
    return version or f"local-{path.resolve().name}-{_folder_hash(path)}", path


def _folder_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("config.json")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:8]


def promote(store: Store, challenger: str, gate: str | Path | None = None, tolerance: float = 0.0,
            top_clusters: int = 3, min_cluster_pairs: int = 30, force: bool = False,
            progress: bool | None = None) -> dict:
    """Run the gate for `challenger` (a version) against the champion; promote it if it passes (or `force`).

    The first `gate` file given is copied into the Curate home and stays the gate set until another is given.
    Returns {"decision", "challenger", "champion", "figures"}.
    """
    from loops.reward.data import load_pairs
    from loops.reward.evaluate import pair_wins
    from loops.reward.model import RewardModel

    chal = get(store, challenger)
    champ = champion(store)
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
    now = utcnow()
    with store.begin() as conn:
        if decision == "promoted":
            conn.execute(reward_models.update().where(reward_models.c.status == "champion").values(status="retired"))
            conn.execute(reward_models.update().where(reward_models.c.version == challenger).values(status="champion"))
        conn.execute(promotions.insert().values(
            challenger=challenger, champion=champ["version"] if champ else None, decision=decision,
            figures=dumps(figures), decided_at=now,
        ))
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
            from loops.reward.data import read_rows

            import orjson

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
