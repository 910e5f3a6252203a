"""Where Curate keeps its state, and how settings are resolved.

Precedence everywhere: CLI option > environment (`CURATE_…`) > `curate.toml` > default.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from curation.errors import ConfigError

DEFAULT_HOME = ".curate"


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """`--home` if given, else `$CURATE_HOME`, else `./.curate`."""
    chosen = home or env_value("CURATE_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser()


def resolve_cache(cache: str | os.PathLike | None = None) -> Path:
    """Where exported and calibrated models are kept, once per machine for every home: `cache` if given, else
    `$CURATE_CACHE_DIR`, else `$XDG_CACHE_HOME/curate`, else `~/.cache/curate`."""
    chosen = cache or env_value("CURATE_CACHE_DIR")
    if not chosen:
        chosen = Path(env_value("XDG_CACHE_HOME") or Path.home() / ".cache") / "curate"
    return Path(chosen).expanduser()


K_RULE = "\"auto\" or an integer ≥ 2 (one cluster ranks nothing)"


def parse_k(value: int | str) -> int | str:
    """`k` as every caller takes it (the library, `--k`, a loop file's cluster.k): "auto", or an integer ≥ 2 given as
    a number or its digits; ValueError naming `K_RULE` otherwise."""
    if value == "auto":
        return value
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or int(text) < 2:
        raise ValueError(f"must be {K_RULE}, not {value!r}")
    return int(text)


class SettingError(ConfigError):
    """A value in curate.toml, a loop file or a `CURATE_…` variable is invalid: a usage error, like a bad option
    (the CLI prints the one line, which names the file or variable and the key, and exits 2)."""


# curate.toml files read during the current command (path -> parsed table); None outside `config_scope`
_READ: contextvars.ContextVar[dict[str, dict] | None] = contextvars.ContextVar("curate_config_read", default=None)


@contextlib.contextmanager
def config_scope() -> Iterator[None]:
    """Within it (every CLI command runs in one), each curate.toml is read and parsed once, so all the settings of a
    command come from the same file contents."""
    token = _READ.set({})
    try:
        yield
    finally:
        _READ.reset(token)


def config_path(home: Path) -> Path | None:
    """The curate.toml that applies: the home folder's, else the working directory's; None when neither exists."""
    return next((p for p in (Path(home) / "curate.toml", Path("curate.toml")) if p.is_file()), None)


def load_config_file(home: Path) -> dict[str, Any]:
    """Read `curate.toml` from the home folder, else the working directory; `{}` when neither exists."""
    path = config_path(home)
    if path is None:
        return {}
    read = _READ.get()
    key = str(path.resolve())
    if read is not None and key in read:
        return read[key]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"{path}: invalid TOML ({exc}); fix the file or remove it") from None
    if read is not None:
        read[key] = data
    return data


def config_section(home: Path, section: str) -> tuple[dict[str, Any], str]:
    """The curate.toml table `section` (dotted: "cluster.labeller"; `{}` when absent) and how errors name it
    ("PATH [section]"). A section that is not a table is a SettingError."""
    data: Any = load_config_file(home)
    path = config_path(home)
    where = f"{path if path is not None else 'curate.toml'} [{section}]"
    for part in section.split("."):
        data = data.get(part, {})
        if not isinstance(data, dict):
            raise SettingError(f"{where}: must be a table of settings, not {data!r}")
    return data, where


def env_value(var: str) -> str | None:
    """An environment variable's value; unset and empty both mean "not set"."""
    return os.environ.get(var) or None


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def convert(value: Any, hint: Any, source: str) -> Any:
    """`value` as the field type `hint` (bool, int, float, str, or one of them | None). Strings (the environment's,
    or quoted numbers in a file) are parsed; anything else must have the type already (an int does for a float).
    A value that does not fit is a SettingError naming `source` (the variable, or the file, table and key)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] \
        if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    base = options[0] if len(options) == 1 else None
    if value is None or base not in _KINDS:
        return value
    if isinstance(value, str) and base is not str:
        text = value.strip().lower()
        try:
            if base is bool:
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text in ("true", "1", "yes")
            return base(text)
        except ValueError:
            raise SettingError(f"{source}: must be {_KINDS[base]}, not {value!r}") from None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is not bool and isinstance(value, bool)):
        raise SettingError(f"{source}: must be {_KINDS[base]}, not {value!r}")
    return value


def resolve_fields(cls: type, home: Path, section: str, env: dict[str, str],
                   overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The one way settings are read: the dataclass `cls`'s values from curate.toml `[section]` < the environment
    (`env`: field name -> variable) < `overrides` that are not None (CLI options, arguments), each value from the
    file or the environment converted to its field's type (`convert`). Returns (values, where each one came from);
    an unknown key or a value that does not fit is a SettingError naming the file or the variable and the key."""
    table, where = config_section(home, section)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, value in table.items():
        if key not in names:
            raise SettingError(f"{where}: unknown key {key!r}; allowed: {', '.join(names)}")
        values[key], origin[key] = convert(value, hints[key], f"{where} {key}"), f"{where} {key}"
    for name, var in env.items():
        if (value := env_value(var)) is not None:
            values[name], origin[name] = convert(value, hints[name], f"{var} ({section} {name})"), var
    for name, value in overrides.items():
        if value is not None:
            values[name], origin[name] = value, f"the {name} argument"
    return values, origin


def layered(section: dict[str, Any], where: str, names: Any, env: dict[str, str], overrides: dict[str, Any]) -> dict[str, Any]:
    """The values of a settings class whose table another module reads (the annotation server's, generate's): the
    table `section` < the environment (an empty variable counts as unset) < `overrides` that are not None, without
    type conversion (`resolve_fields` is the typed path). A key not in `names` is an error naming the table."""
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key not in names:
            raise SettingError(f"curate.toml [{where}]: unknown key {key!r}; allowed: {', '.join(names)}")
        values[key] = value
    values.update({name: value for name, var in env.items() if (value := env_value(var)) is not None})
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
        values, origin = resolve_fields(cls, home, "ingest", env, overrides)
        for name, value in values.items():
            if name != "user_salt" and value < 1:  # -1 would quarantine everything
                raise SettingError(f"ingest setting {name} = {value!r} must be an integer ≥ 1 ({origin[name]})")
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
        values, origin = resolve_fields(cls, home, "cluster.labeller", _LABELLER_ENV, overrides)
        settings = cls(**values)
        if settings.kind not in LABELLERS:
            raise SettingError(f"unknown labeller {settings.kind!r} ({origin['kind']}); use {' or '.join(LABELLERS)}")
        if settings.kind == "llm":
            for name, option in (("url", "--llm-url"), ("model", "--llm-model")):
                if not getattr(settings, name):
                    raise SettingError(f"the llm labeller needs an endpoint {name}: pass {option}, set "
                                       f"{_LABELLER_ENV[name]}, or set {name} in curate.toml [cluster.labeller]")
        return settings
