"""The reward-model registry: every trained model with its data version and metrics, its status
(candidate | champion | retired), and every promotion decision. The gate that decides is `loops.reward.gate`.
"""
from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import sqlalchemy as sa

from curation.errors import CurateError
from curation.store import Store, dumps, loads, utcnow
from loops.tables import promotions, reward_models


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


def get(store: Store, version: str | Path) -> dict:
    """A registered model by its version, or by the folder `curate reward train --out` saved it in (the newest
    model trained there)."""
    with store.connect() as conn:
        row = conn.execute(sa.select(reward_models).where(reward_models.c.version == str(version))).mappings().first()
        if row is None and Path(version).is_dir():
            row = conn.execute(sa.select(reward_models).where(reward_models.c.path == str(Path(version).resolve()))
                               .order_by(reward_models.c.created_at.desc())).mappings().first()
    if row is None:
        raise RegistryError(f"no reward model {str(version)!r} in the registry (a version, or a folder that "
                            "`curate reward train --out` wrote); see `curate reward list`")
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
        version = conn.execute(  # the newest model trained into that folder
            sa.select(reward_models.c.version).where(reward_models.c.path == str(path.resolve()))
            .order_by(reward_models.c.created_at.desc())
        ).scalar()
    # An unregistered folder is named by its content, so re-scoring with a changed model is a new version.
    return version or f"local-{path.resolve().name}-{_folder_hash(path)}", path


def _folder_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")) + sorted(path.glob("config.json")):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:8]


def record_promotion(store: Store, challenger: str, champion: str | None, decision: str, figures: dict) -> None:
    """Record a gate decision; "promoted" makes `challenger` the champion and retires the previous one."""
    with store.begin() as conn:
        if decision == "promoted":
            conn.execute(reward_models.update().where(reward_models.c.status == "champion").values(status="retired"))
            conn.execute(reward_models.update().where(reward_models.c.version == challenger).values(status="champion"))
        conn.execute(promotions.insert().values(
            challenger=challenger, champion=champion, decision=decision, figures=dumps(figures), decided_at=utcnow(),
        ))
