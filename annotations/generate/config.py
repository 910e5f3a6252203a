"""Settings of `curate generate`: curate.toml `[generate]` (or a loop file's `[generate]`), the environment, options.

```toml
[generate]
concurrency = 16          # requests in flight, over all endpoints
max_requests = 2000       # per run, retries included (0 = no cap)

[[generate.endpoints]]
url = "http://localhost:8000/v1"
model = "my-org/policy-v3"
api_key_env = "GENERATOR_API_KEY"   # the key is read from this variable, never from a file
temperature = 1.0
max_tokens = 512
n = 1
```
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from curation.config import layered, load_config_file
from curation.errors import ConfigError


def _f(default: Any, text: str) -> Any:
    if isinstance(default, list):
        return field(default_factory=list, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible chat endpoint that writes candidate responses."""

    url: str = _f("", "API base URL (e.g. http://localhost:8000/v1) or the full …/chat/completions URL")
    model: str = _f("", "model name sent in each request")
    api_key_env: str = _f("", "environment variable holding the API key (empty: no key)")
    temperature: float = _f(1.0, "sampling temperature")
    max_tokens: int = _f(512, "most tokens per candidate")
    n: int = _f(1, "candidates per conversation from this endpoint")
    name: str = _f("", "the generator's name (default: the model); two endpoints that serve one model need two names")

    @property
    def key(self) -> str:
        """The generator's identity: its name, else its model. A conversation gets at most `n` candidates per key,
        whatever the URL, temperature or token limit, so moving the server or changing a setting does not generate
        everything again."""
        return self.name or self.model

    @property
    def chat_url(self) -> str:
        """The URL requests go to: the API base's path plus /chat/completions, its query string kept."""
        parts = urllib.parse.urlsplit(self.url)
        path = parts.path.rstrip("/")
        return parts._replace(path=path if path.endswith("/chat/completions") else path + "/chat/completions").geturl()

    def key_hint(self) -> str:
        """What to check when the endpoint refuses the key (HTTP 401): the variable Curate reads it from, if any."""
        if self.api_key_env:
            return f"check the API key in ${self.api_key_env}, the variable this endpoint's key is read from"
        return ("the endpoint wants an API key and Curate sends none: name the variable that holds it with "
                "api_key_env in [[generate.endpoints]], or --api-key-env NAME with --url")


# field name -> environment variable (scalars only; endpoints come from the file or the command line)
_ENV = {"concurrency": "CURATE_GENERATE_CONCURRENCY", "timeout": "CURATE_GENERATE_TIMEOUT",
        "retries": "CURATE_GENERATE_RETRIES", "max_requests": "CURATE_GENERATE_MAX_REQUESTS",
        "max_total_tokens": "CURATE_GENERATE_MAX_TOTAL_TOKENS"}


@dataclass
class GenerateSettings:
    """Where candidate responses come from, and the bounds of one run."""

    endpoints: list[Endpoint] = _f([], "the generators ([[generate.endpoints]]: url, model, api_key_env, temperature, max_tokens, n, name)")
    concurrency: int = _f(8, "requests in flight at once, over all endpoints")
    timeout: float = _f(60.0, "seconds one request may take, the whole answer included")
    retries: int = _f(3, "retries of a request after a 429, a 5xx, a timeout or a dropped connection")
    backoff: float = _f(0.5, "first retry delay in seconds, doubled each retry (a Retry-After header wins when longer)")
    max_retry_after: float = _f(60.0, "longest Retry-After honoured; a longer one fails the request")
    stop_after: int = _f(5, "stop calling an endpoint after this many candidates in a row failed")
    max_requests: int = _f(0, "per-run cap on requests, retries included (0: none)")
    max_total_tokens: int = _f(0, "per-run cap on tokens, prompt and completion (0: none)")
    redact: bool = _f(True, "redact PII from the context before it is sent (as push does for Argilla)")
    seed: int = _f(0, "base of each candidate's seed (sent as `seed`, stored with the candidate)")

    @classmethod
    def from_section(cls, section: Any, where: str = "curate.toml [generate]") -> "GenerateSettings":
        """Validate a `[generate]` table; errors name the key and what is allowed."""
        if not isinstance(section, dict):
            raise ConfigError(f"{where} must be a table")
        return cls(**_typed(cls, {**section}, where))

    @classmethod
    def resolve(cls, home: Path, endpoints: list[Endpoint] | None = None, **overrides: Any) -> "GenerateSettings":
        """Defaults < curate.toml `[generate]` < `CURATE_GENERATE_*` < overrides; `endpoints`, when given, replace the file's."""
        section = load_config_file(home).get("generate", {})
        if not isinstance(section, dict):
            raise ConfigError("curate.toml [generate] must be a table")
        values = layered(section, "generate", [f.name for f in fields(cls)], _ENV, overrides)
        if endpoints is not None:
            values["endpoints"] = endpoints
        return cls(**_typed(cls, values, "curate.toml [generate]"))

    def require_endpoints(self) -> "GenerateSettings":
        """These settings, when they name at least one endpoint and no generator twice."""
        if not self.endpoints:
            raise ConfigError("no generation endpoints: add [[generate.endpoints]] (url, model) to curate.toml, "
                              "or pass --generate-url URL --generate-model NAME")
        keys = [e.key for e in self.endpoints]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice is not None:
            raise ConfigError(f"two endpoints are both generator {twice!r}; give each a different name")
        return self


def public_url(url: str) -> str:
    """The URL without credentials of any kind, for logs, run params and provenance: no user:password@, and no
    query string or fragment (where keys and signatures travel: ?key=…, ?api-key=…, ?sig=…)."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


def _typed(cls: type, values: dict, where: str) -> dict:
    """Check names and types (environment strings are converted); endpoints become `Endpoint`s."""
    names = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(names)}")
        if key == "endpoints":
            out[key] = _endpoints(value, where)
            continue
        out[key] = _convert(value, type(names[key].default), f"{where}: {key!r}")
    for name in ("concurrency", "stop_after"):
        if name in out and out[name] < 1:
            raise ConfigError(f"{where}: {name!r} must be at least 1, not {out[name]}")
    for name in ("timeout", "retries", "backoff", "max_retry_after", "max_requests", "max_total_tokens"):
        if name in out and out[name] < 0:
            raise ConfigError(f"{where}: {name!r} must be 0 or more, not {out[name]}")
    if out.get("timeout") == 0:
        raise ConfigError(f"{where}: 'timeout' must be more than 0 seconds")
    return out


def _endpoints(value: Any, where: str) -> list[Endpoint]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: 'endpoints' must be a list of tables ([[generate.endpoints]])")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, Endpoint):
            out.append(item)
            continue
        at = f"{where} endpoints[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at} must be a table with url and model")
        known = {f.name: f for f in fields(Endpoint)}
        unknown = set(item) - set(known)
        if unknown:
            raise ConfigError(f"{at}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(known)}")
        endpoint = Endpoint(**{k: _convert(v, type(known[k].default), f"{at}: {k!r}") for k, v in item.items()})
        out.append(check_endpoint(endpoint, at))
    keys = [e.key for e in out]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise ConfigError(f"{where}: two endpoints are both generator {twice!r}; give each a different name")
    return out


def check_endpoint(endpoint: Endpoint, where: str = "the endpoint") -> Endpoint:
    """Refuse an endpoint without a URL or model, or with values no server accepts."""
    if not endpoint.url or not endpoint.model:
        raise ConfigError(f"{where}: needs both url and model")
    if urllib.parse.urlsplit(endpoint.url).scheme not in ("http", "https"):
        raise ConfigError(f"{where}: url {public_url(endpoint.url)!r} must start with http:// or https://")
    if endpoint.n < 1 or endpoint.max_tokens < 1 or endpoint.temperature < 0:
        raise ConfigError(f"{where}: n and max_tokens must be at least 1 and temperature 0 or more")
    return endpoint


def _convert(value: Any, kind: type, where: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
                return value.lower() in ("1", "true", "yes")
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        name = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[kind]
        raise ConfigError(f"{where} must be {name}, not {value!r}") from None
