"""Where Curate keeps its state, and how settings are resolved.

Precedence everywhere: CLI option > environment (`CURATE_…`) > `curate.toml` > default.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from curation.errors import ConfigError

DEFAULT_HOME = ".curate"


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """`--home` if given, else `$CURATE_HOME`, else `./.curate`."""
    chosen = home or os.environ.get("CURATE_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser()


def load_config_file(home: Path) -> dict[str, Any]:
    """Read `curate.toml` from the home folder, else the working directory; `{}` when neither exists."""
    for candidate in (home / "curate.toml", Path("curate.toml")):
        if candidate.is_file():
            try:
                return tomllib.loads(candidate.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: invalid TOML ({exc}); fix the file or remove it") from None
    return {}


@dataclass
class IngestSettings:
    """Limits and privacy settings applied while ingesting."""

    max_messages: int = field(default=1_000, metadata={"help": "quarantine conversations with more messages than this"})
    max_chars: int = field(default=500_000, metadata={"help": "quarantine conversations whose text is longer than this"})
    batch_size: int = field(default=10_000, metadata={"help": "records per insert transaction"})
    # Measured on the 2-core dev machine (docs/performance.md): worker processes were slower there and pushed peak RSS
    # past 300 MB, so they are opt-in for machines with cores to spare.
    workers: int = field(default=1, metadata={"help": "processes validating large JSONL files (1 = validate in this process)"})
    user_salt: str = field(default="curate", metadata={"help": "salt for hashing user ids (env CURATE_USER_SALT)"})

    @classmethod
    def resolve(cls, home: Path, **overrides: Any) -> "IngestSettings":
        """Defaults < `[ingest]` in curate.toml < `CURATE_INGEST_*` / `CURATE_USER_SALT` env < overrides."""
        values: dict[str, Any] = {}
        section = load_config_file(home).get("ingest", {})
        names = {f.name: f for f in fields(cls)}
        for key, value in section.items():
            if key not in names:
                raise ConfigError(f"curate.toml [ingest]: unknown key {key!r}; allowed: {', '.join(names)}")
            values[key] = value
        for name, f in names.items():
            env = os.environ.get("CURATE_USER_SALT" if name == "user_salt" else f"CURATE_INGEST_{name.upper()}")
            if env is not None:
                values[name] = env if f.type in ("str", str) else int(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
