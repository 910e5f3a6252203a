"""Loop definitions: TOML files (see loops/nightly.toml), validated on load into typed sections.

Every key has a default, so a loop file names only what it changes. An unknown key or a value of the wrong type is
an error that names the key and what is allowed.
"""
from __future__ import annotations

import hashlib
import os
import re
import tomllib
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from annotations.generate.config import GenerateSettings
from annotations.server.settings import DEFAULT_WORKSPACE
from curation.config import SettingError, parse_k
from curation.judge.config import JudgeSettings
from loops.export_config import RULES, PairRules
from loops.reward_config import LOSSES, TrainConfig


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Sources:
    paths: list[str] = _f([], "files or folders of JSONL/Parquet to ingest ({home} = the Curate home); files seen before are skipped")
    format: str = _f("auto", "ingest format", ("auto", "openai", "sharegpt", "oasst", "parquet", "hf"))
    logged: bool = _f(True, "also take conversations the logging API wrote to the store since the last run")


# [embed] and [engine] hold only what the loop file sets (None: not set). The steps pass them to `curate embed`'s
# settings path (`EmbedSettings`, `EngineSettings`) as arguments, so a key left out comes from the environment, else
# curate.toml, else the default, exactly as for `curate embed`; `load` lets the environment beat a key that is set.
UNSET = "unset: $CURATE_{var}, else curate.toml [{section}], else {default}"


@dataclass
class Embed:
    model: str | None = _f(None, "embedding model name or path; empty or " + UNSET.format(
        var="EMBED_MODEL", section="embed", default="the bundled all-MiniLM-L6-v2"))
    backend: str | None = _f(None, "embedding backend; " + UNSET.format(var="EMBED_BACKEND", section="embed", default="auto"),
                             ("auto", "torch", "onnx", "openvino"))
    view: str | None = _f(None, "what text is embedded; " + UNSET.format(var="EMBED_VIEW", section="embed", default="thread"),
                          ("thread", "last_turn", "request"))


@dataclass
class Engine:
    kind: str | None = _f(None, "where embed, score and the failure scoring run: local or ray; empty or " + UNSET.format(
        var="ENGINE_KIND", section="engine", default="local"), ("", "local", "ray"))
    address: str | None = _f(None, "Ray cluster for kind = \"ray\": \"auto\" or \"ray://HOST:10001\"; empty or " + UNSET.format(
        var="ENGINE_ADDRESS", section="engine", default="$RAY_ADDRESS"))


@dataclass
class Cluster:
    k: str = _f("auto", "number of clusters, or auto")
    algorithm: str = _f("kmeans", "clustering algorithm", ("kmeans", "hdbscan"))
    seed: int = _f(0, "random seed")


@dataclass
class Annotate:
    enabled: bool = _f(True, "push failures to Argilla and pull ratings back")
    dataset: str = _f("failures", "Argilla dataset name (the README's tour pushes to the same one)")
    workspace: str = _f(DEFAULT_WORKSPACE, "Argilla workspace (as `curate annotate push`'s default)")
    api_url: str = _f("", "Argilla URL; empty = $ARGILLA_API_URL, else the embedded server's address")
    budget: int = _f(100, "records pushed per run")
    strategy: str = _f("failure", "routing strategy", ("failure", "random"))
    min_submitted: int = _f(1, "responses needed per record (≥ 2 for agreement studies)")
    pairs: bool = _f(True, "show a sibling reply to the same context as response B, for a preference rating")


@dataclass
class Export:
    rules: list[str] = _f(list(PairRules.rules),
                          "pair rules: ratings (a: rated responses to one context), preference (b: strength −3…3), "
                          "rewrite (c: rewrite ≻ original), feedback (d: thumbs-up sibling ≻ thumbs-down)")
    tie_threshold: float = _f(PairRules.tie_threshold, "rule (a): drop pairs whose score difference is below this")
    include_disagreement: bool = _f(PairRules.include_disagreement, "keep records flagged for annotator disagreement")
    test_size: float = _f(PairRules.test_size, "share of contexts held out for evaluation and the gate (as --test-size)")
    mix: list[str] = _f([], "existing TRL-format preference data to mix in: files, export folders, or hub ids when online")
    seed: int = _f(PairRules.seed, "split seed")


@dataclass
class Train:
    min_new_pairs: int = _f(200, "retrain when at least this many new rated pairs exist since the last model")
    base: str = _f("", "base model name or path; empty = the bundled MiniLM encoder")
    loss: str = _f(TrainConfig.loss, "training loss", LOSSES)
    epochs: float = _f(1.0, "training epochs")
    max_length: int = _f(96, "tokens per rendered conversation")
    seed: int = _f(0, "training seed")


@dataclass
class Gate:
    pairs: str = _f("", "fixed gate set (TRL-format JSONL); empty = the first export's test split, then kept fixed")
    tolerance: float = _f(0.0, "accuracy a challenger may lose against the champion and the longer-answer baseline")
    clusters: int = _f(3, "also gate on the largest N clusters in the gate set")


@dataclass
class LoopConfig:
    name: str = _f("nightly", "loop name: runs and locks are per name")
    sources: Sources = field(default_factory=Sources)
    embed: Embed = field(default_factory=Embed)
    engine: Engine = field(default_factory=Engine)
    cluster: Cluster = field(default_factory=Cluster)
    annotate: Annotate = field(default_factory=Annotate)
    # candidates for pairs (annotations.generate): when this names endpoints the push step generates; without a
    # [generate] section here, curate.toml's [generate] is used
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    # the judge step (loops/loop/judge_step.py) runs when this, else curate.toml's [judge], names endpoints
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    export: Export = field(default_factory=Export)
    train: Train = field(default_factory=Train)
    gate: Gate = field(default_factory=Gate)
    path: str = field(default="", metadata={"internal": True})

    def digest(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        return hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "path"}


def load(path: str | Path | None) -> LoopConfig:
    """Read and validate a loop file; None gives the defaults. The environment beats the file (`CURATE_EMBED_MODEL`,
    `_BACKEND` and `_VIEW`, as for `curate embed`), so a scheduler can pick the backend without editing the file."""
    return _environment(_load_file(path) if path is not None else LoopConfig())


def _environment(config: LoopConfig) -> LoopConfig:
    for f in fields(Embed):
        value = os.environ.get(f"CURATE_EMBED_{f.name.upper()}")
        if value:
            setattr(config.embed, f.name, _check(value, str, f, f"CURATE_EMBED_{f.name.upper()}", f"embed.{f.name}"))
    for f in fields(Engine):
        value = os.environ.get(f"CURATE_ENGINE_{f.name.upper()}")
        if value:
            setattr(config.engine, f.name, _check(value, str, f, f"CURATE_ENGINE_{f.name.upper()}", f"engine.{f.name}"))
    return config


def _load_file(path: str | Path) -> LoopConfig:
    path = Path(path)
    shipped = Path(__file__).resolve().parent.parent / path.name
    if not path.is_file() and path.parent == Path("loops") and shipped.is_file():
        path = shipped  # `loops/nightly.toml` outside a checkout: the example the installed package ships
    if not path.is_file():
        raise SettingError(f"{path}: loop file not found; see loops/nightly.toml for an example")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"{path}: invalid TOML ({exc})") from None
    _rename_deprecated(data, path)
    config = _build(LoopConfig, data, str(path), "")
    config.path = str(path)
    base = path.parent
    config.sources.paths = [p if p.startswith("{home}") or Path(p).is_absolute() else str(base / p) for p in config.sources.paths]
    config.export.mix = [p if p.startswith("{home}") or Path(p).is_absolute() or not (base / p).exists() else str(base / p)
                         for p in config.export.mix]
    if config.gate.pairs and not Path(config.gate.pairs).is_absolute():
        config.gate.pairs = str(base / config.gate.pairs)
    return config


# Keys renamed to match the CLI's options: (section, old, new). The old name still works, with a FutureWarning
# that points at its line in the loop file.
RENAMED = [("export", "test_fraction", "test_size")]


def _rename_deprecated(data: dict, path: Path) -> None:
    for section, old, new in RENAMED:
        table = data.get(section)
        if not isinstance(table, dict) or old not in table:
            continue
        if new in table:
            raise SettingError(f"{path}: '{section}.{old}' is the old name of '{section}.{new}'; keep only '{new}'")
        table[new] = table.pop(old)
        text = path.read_text(encoding="utf-8")
        found = re.search(rf"(?m)^[ \t]*{old}[ \t]*=", text)
        line = text.count("\n", 0, found.start()) + 1 if found else 1
        warnings.warn_explicit(f"'{section}.{old}' is deprecated: rename it to '{section}.{new}' (as the CLI's "
                               f"--{new.replace('_', '-')}); the old name will stop working",
                               FutureWarning, str(path), line)


def _build(cls: type, data: Any, where: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise SettingError(f"{where}: [{prefix.rstrip('.')}] must be a table")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    values = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise SettingError(f"{where}: unknown key '{name}'; allowed here: {', '.join(known)}")
        hint = hints[key]
        if hasattr(hint, "from_section"):  # a section that validates itself ([generate] and its endpoint list)
            values[key] = hint.from_section(value, f"{where}: [{name}]")
            continue
        if is_dataclass(hint):
            values[key] = _build(hint, value, where, f"{name}.")
            continue
        values[key] = _check(value, hint, known[key], where, name)
    return cls(**values)


# Numbers outside these ranges would run and produce nonsense (an empty split, an untrained model), so they are
# errors like unknown keys; the matching `curate` options take the same ranges.
RANGES: dict[str, tuple[Any, str]] = {
    "cluster.seed": (lambda v: 0 <= v < 2**32, "in [0, 2³²) (a numpy seed)"),
    "train.seed": (lambda v: 0 <= v < 2**32, "in [0, 2³²) (a numpy seed)"),
    "annotate.budget": (lambda v: v >= 1, "≥ 1"),
    "annotate.min_submitted": (lambda v: v >= 1, "≥ 1"),
    "export.tie_threshold": (lambda v: v >= 0, "≥ 0"),
    "export.test_size": (lambda v: 0 <= v < 1, "in [0, 1): 0 holds nothing out"),
    "train.min_new_pairs": (lambda v: v >= 0, "≥ 0"),
    "train.epochs": (lambda v: v > 0, "> 0 (fractions of an epoch are allowed)"),
    "train.max_length": (lambda v: v >= 8, "≥ 8 tokens"),
    "gate.tolerance": (lambda v: 0 <= v <= 1, "in [0, 1] (an accuracy drop)"),
    "gate.clusters": (lambda v: v >= 0, "≥ 0"),
}
def _check(value: Any, hint: Any, f: Any, where: str, name: str) -> Any:
    if get_origin(hint) in (Union, UnionType):  # `str | None`: a file or variable value is never None
        hint = next(a for a in get_args(hint) if a is not type(None))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is str and isinstance(value, int) and not isinstance(value, bool) and name.endswith(".k"):
        value = str(value)  # k = 12 is as good as k = "12"
    origin = get_origin(hint)
    ok = (
        isinstance(value, list) and all(isinstance(v, get_args(hint)[0]) for v in value)
        if origin is list
        else isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    )
    if not ok:
        kind = "a list of strings" if origin is list else {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[hint]
        raise SettingError(f"{where}: '{name}' must be {kind}, not {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise SettingError(f"{where}: '{name}' = {value!r} is not allowed; choose one of {', '.join(choices)}")
    if name.endswith(".k"):
        try:
            parse_k(value)
        except ValueError as exc:
            raise SettingError(f"{where}: 'cluster.k' {exc}") from None
    if name == "export.rules" and not set(value) <= set(RULES):
        raise SettingError(f"{where}: 'export.rules' may only contain {', '.join(RULES)} (got {value})")
    if name in RANGES and not RANGES[name][0](value):
        raise SettingError(f"{where}: '{name}' must be {RANGES[name][1]}, not {value!r}")
    return value


def describe() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key, for docs."""
    rows = []
    for section in fields(LoopConfig):
        hint = get_type_hints(LoopConfig)[section.name]
        if is_dataclass(hint):
            for f in fields(hint):
                default = f.default if f.default is not MISSING else f.default_factory()
                rows.append((f"{section.name}.{f.name}", default, f.metadata["help"]))
        elif not section.metadata.get("internal"):
            rows.append((section.name, section.default, section.metadata["help"]))
    return rows
