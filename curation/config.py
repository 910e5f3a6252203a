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


def resolve_cache(cache: str | os.PathLike | None = None) -> Path:
    """Where exported and calibrated models are kept, once per machine for every home: `cache` if given, else
    `$CURATE_CACHE_DIR`, else `$XDG_CACHE_HOME/curate`, else `~/.cache/curate`."""
    chosen = cache or os.environ.get("CURATE_CACHE_DIR")
    if not chosen:
        chosen = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "curate"
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


def layered(section: dict[str, Any], where: str, names: Any, env: dict[str, str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The values a settings class is built from: a curate.toml `section` < the environment (`env`: field name ->
    variable; an empty variable counts as unset) < `overrides` that are not None. A key of `section` that is not in
    `names` is an error naming the section (`where`). Environment values stay strings: the caller converts them."""
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in names:
            raise ConfigError(f"curate.toml [{where}]: unknown key {key!r}; allowed: {', '.join(names)}")
        values[key] = value
    values.update({name: os.environ[var] for name, var in env.items() if os.environ.get(var)})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


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
        names = [f.name for f in fields(cls)]
        env = {name: "CURATE_USER_SALT" if name == "user_salt" else f"CURATE_INGEST_{name.upper()}" for name in names}
        values = layered(load_config_file(home).get("ingest", {}), "ingest", names, env, overrides)
        for f in fields(cls):
            if f.type in ("str", str) or f.name not in values:
                continue
            value = values[f.name]
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = values[f.name] = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:  # -1 would quarantine everything
                raise ConfigError(f"ingest setting {f.name} = {value!r} must be an integer ≥ 1 "
                                  f"(curate.toml [ingest] {f.name}, or env {env[f.name]})")
        return cls(**values)


# field name -> environment variable; the API key is read from CURATE_LLM_API_KEY by the labeller itself, never
# from a file or an option, so that it does not end up in shell history or in a committed curate.toml.
_LABELLER_ENV = {"kind": "CURATE_CLUSTER_LABELLER", "url": "CURATE_LLM_URL", "model": "CURATE_LLM_MODEL",
                 "timeout": "CURATE_LLM_TIMEOUT", "max_examples": "CURATE_LLM_MAX_EXAMPLES",
                 "max_chars": "CURATE_LLM_MAX_CHARS", "min_users": "CURATE_LLM_MIN_USERS"}
LABELLERS = ("ctfidf", "llm")


@dataclass
class LabellerSettings:
    """How `curate cluster` names clusters: curate.toml `[cluster.labeller]`, or the environment in `_LABELLER_ENV`."""

    kind: str = field(default="ctfidf", metadata={"help": "ctfidf (keywords, offline) or llm (an OpenAI-compatible endpoint names each cluster)"})
    url: str | None = field(default=None, metadata={"help": "base URL of the chat-completions endpoint, e.g. http://localhost:8000/v1"})
    model: str | None = field(default=None, metadata={"help": "model name the endpoint serves"})
    timeout: float = field(default=30.0, metadata={"help": "seconds to wait for one answer"})
    max_examples: int = field(default=5, metadata={"help": "most central user texts sent per cluster"})
    max_chars: int = field(default=300, metadata={"help": "characters kept of each text sent"})
    min_users: int | None = field(default=None, metadata={"help": "send only clusters with this many distinct users (default: the privacy threshold, 5)"})

    @classmethod
    def resolve(cls, home: Path, **overrides: Any) -> "LabellerSettings":
        """Defaults < curate.toml `[cluster.labeller]` < environment < overrides; checks that an llm labeller has a URL and a model."""
        section = load_config_file(home).get("cluster", {}).get("labeller", {})
        values = layered(section, "cluster.labeller", [f.name for f in fields(cls)], _LABELLER_ENV, overrides)
        try:
            for name in ("timeout", "max_examples", "max_chars", "min_users"):
                if values.get(name) is not None:
                    values[name] = (float if name == "timeout" else int)(values[name])
        except ValueError:
            raise ConfigError(f"labeller {name} must be a number, not {values[name]!r} "
                              f"(curate.toml [cluster.labeller] or {_LABELLER_ENV[name]})") from None
        settings = cls(**values)
        if settings.kind not in LABELLERS:
            raise ConfigError(f"unknown labeller {settings.kind!r}; use {' or '.join(LABELLERS)}")
        if settings.kind == "llm":
            for name, option in (("url", "--llm-url"), ("model", "--llm-model")):
                if not getattr(settings, name):
                    raise ConfigError(f"the llm labeller needs an endpoint {name}: pass {option}, set "
                                      f"{_LABELLER_ENV[name]}, or set {name} in curate.toml [cluster.labeller]")
        return settings
