"""Where the per-conversation stages run: in this process (`local`), or on a Ray cluster (`ray`).

`curate embed`, `curate reward score` and the failure scoring of `curate cluster` take `--engine` and `--ray-address`;
curate.toml `[engine]` (`kind`, `address`) and `CURATE_ENGINE_KIND` / `CURATE_ENGINE_ADDRESS` set them for every
command (precedence: option > environment > curate.toml > default). Ray is imported only when the engine is `ray`.
"""
from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from curation.config import SettingError, resolve_fields
from curation.errors import ConfigError, CurateError

KINDS = ("local", "ray")


class EngineUsageError(ConfigError):
    """The engine cannot run with this store: a usage error (the CLI exits 2)."""


class RayMissingError(CurateError):
    """`--engine ray` was asked for but Ray is not installed."""


@dataclass
class EngineSettings:
    """Which engine runs the per-conversation stages; curate.toml `[engine]` or `CURATE_ENGINE_<NAME>`."""

    kind: str = field(default="local", metadata={"help": "local (this process) or ray (a Ray cluster)"})
    address: str | None = field(default=None, metadata={
        "help": "Ray cluster: auto (the one `ray start` runs on this machine), ray://HOST:10001 (Ray Client), or "
                "empty: $RAY_ADDRESS, else a Ray instance started for the run on this machine"})

    @classmethod
    def resolve(cls, home: Path, **overrides: Any) -> "EngineSettings":
        """Defaults < curate.toml `[engine]` < `CURATE_ENGINE_KIND` / `CURATE_ENGINE_ADDRESS` < explicit arguments."""
        env = {f.name: f"CURATE_ENGINE_{f.name.upper()}" for f in fields(cls)}
        settings = cls(**resolve_fields(cls, home, "engine", env, overrides)[0])
        if settings.kind not in KINDS:
            raise SettingError(f"unknown engine {settings.kind!r}; use local or ray "
                              "(--engine, CURATE_ENGINE_KIND or curate.toml [engine] kind)")
        return settings


def resolve_engine(store: Any, engine: str | None = None, address: str | None = None) -> EngineSettings:
    """The engine settings for a run on `store`; checks that a Ray run can work before anything starts."""
    settings = EngineSettings.resolve(store.home, kind=engine, address=address)
    if settings.kind == "ray":
        if store.dialect != "postgresql":
            raise EngineUsageError("--engine ray needs the PostgreSQL store, which every Ray worker can reach: set "
                                   "CURATE_DATABASE_URL=postgresql+psycopg://USER@HOST/DB")
        if importlib.util.find_spec("ray") is None:
            raise RayMissingError("--engine ray needs Ray: pip install 'curate[ray]'")
    return settings


@contextlib.contextmanager
def assignment_executor(store: Any, engine: str | None = None, address: str | None = None) -> Iterator[Any]:
    """What runs `curate cluster`'s streamed assignment (`curation.cluster.stream`): None, the local thread pool, or
    Ray tasks on the engine's cluster (connected here, and disconnected after if this call connected)."""
    settings = resolve_engine(store, engine, address)
    if settings.kind != "ray":
        yield None
        return
    import ray

    from curation.cluster.stream import RayExecutor
    from curation.engine.ray_pool import connect

    started = connect(settings.address)
    try:
        yield RayExecutor()
    finally:
        if started:
            ray.shutdown()
