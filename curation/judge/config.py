"""Settings of `curate judge`: curate.toml `[judge]` with `[[judge.endpoints]]`, the environment, options.

```toml
[judge]
concurrency = 16
max_requests = 20000       # per run, retries included (0 = no cap)
rubric = "rubric.md"       # a team's own rubric, relative to CURATE_HOME (default: the one shipped with Curate)

[[judge.endpoints]]
url = "http://localhost:8000/v1"
model = "Qwen/Qwen2.5-7B-Instruct"
api_key_env = "JUDGE_API_KEY"
```
The endpoint keys are those of `[[generate.endpoints]]`; `n` is always 1 and `temperature` defaults to 0.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import ClassVar

from curation.endpoints import EndpointSettings
from curation.errors import ConfigError

VERSION_CHARS = 12  # of the rubric file's sha256: the rubric version stored with each judgement


@dataclass
class JudgeSettings(EndpointSettings):
    """Which endpoints judge, with which rubric, and the bounds of one run."""

    SECTION: ClassVar[str] = "judge"
    ENV: ClassVar[dict[str, str]] = {
        "concurrency": "CURATE_JUDGE_CONCURRENCY", "timeout": "CURATE_JUDGE_TIMEOUT", "retries": "CURATE_JUDGE_RETRIES",
        "max_requests": "CURATE_JUDGE_MAX_REQUESTS", "max_total_tokens": "CURATE_JUDGE_MAX_TOTAL_TOKENS",
        "rubric": "CURATE_JUDGE_RUBRIC"}
    ENDPOINT_DEFAULTS: ClassVar[dict] = {"temperature": 0.0}
    FIXED: ClassVar[dict] = {"n": 1}
    ROLE: ClassVar[str] = "judge"
    NO_ENDPOINTS: ClassVar[str] = ("no judge endpoints: add [[judge.endpoints]] (url, model) to curate.toml, "
                                   "or pass --url URL --model NAME")

    rubric: str = field(default="", metadata={"help": "rubric file (relative to CURATE_HOME); empty: the shipped HelpSteer2 rubric"})
    max_chars: int = field(default=24_000, metadata={"help": "longest conversation text sent; earlier turns are cut first"})


@dataclass(frozen=True)
class Rubric:
    text: str
    version: str  # the first VERSION_CHARS hex digits of the file's sha256
    source: str  # "builtin" or the file's path


def load_rubric(home: Path, path: str = "") -> Rubric:
    """The rubric a run sends as its system message; its version is the hash of the file's bytes."""
    if path:
        file = Path(path) if Path(path).is_absolute() else Path(home) / path
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the judge rubric {file}: {exc.strerror or exc}; fix [judge] rubric "
                              "or remove it to use the shipped rubric") from None
        source = str(file)
    else:
        data = resources.files("curation.judge").joinpath("rubric.md").read_bytes()
        source = "builtin"
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        raise ConfigError(f"the judge rubric {source} is empty")
    return Rubric(text, hashlib.sha256(data).hexdigest()[:VERSION_CHARS], source)
