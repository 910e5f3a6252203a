"""Settings shared by every caller of OpenAI-compatible chat endpoints that runs many requests (generate, judge).

A section of curate.toml (`[generate]`, `[judge]`) holds the run's bounds and a list of endpoints:

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
A subclass names its section (`SECTION`), its environment variables (`ENV`) and what its endpoints default to.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from curation.config import SettingError, config_section, convert, resolve_fields
from curation.errors import ConfigError


def _f(default: Any, text: str) -> Any:
    if isinstance(default, list):
        return field(default_factory=list, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible chat endpoint."""

    url: str = _f("", "API base URL (e.g. http://localhost:8000/v1) or the full …/chat/completions URL")
    model: str = _f("", "model name sent in each request")
    api_key_env: str = _f("", "environment variable holding the API key (empty: no key)")
    temperature: float = _f(1.0, "sampling temperature")
    max_tokens: int = _f(512, "most tokens per answer")
    n: int = _f(1, "candidates per conversation from this endpoint")
    name: str = _f("", "the endpoint's name (default: the model); two endpoints that serve one model need two names")

    @property
    def key(self) -> str:
        """The endpoint's identity: its name, else its model. Work is keyed by it, not by the URL, temperature or
        token limit, so moving the server or changing a setting does not redo everything."""
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
                "api_key_env in the endpoint's table ([[generate.endpoints]], [[judge.endpoints]]), or "
                "--api-key-env NAME with --url")


@dataclass
class EndpointSettings:
    """The endpoints of a run, and its bounds."""

    SECTION: ClassVar[str] = "generate"
    ENV: ClassVar[dict[str, str]] = {}  # field name -> environment variable (scalars only)
    ENDPOINT_DEFAULTS: ClassVar[dict[str, Any]] = {}  # what this section's endpoints default to, where it differs
    FIXED: ClassVar[dict[str, Any]] = {}  # endpoint keys that must keep one value in this section
    ROLE: ClassVar[str] = "endpoint"  # what an endpoint is called in messages ("generator", "judge")
    NO_ENDPOINTS: ClassVar[str] = "no endpoints: add [[SECTION.endpoints]] (url, model) to curate.toml"

    endpoints: list[Endpoint] = _f([], "the endpoints (url, model, api_key_env, temperature, max_tokens, n, name)")
    concurrency: int = _f(8, "requests in flight at once, over all endpoints")
    timeout: float = _f(60.0, "seconds one request may take, the whole answer included")
    retries: int = _f(3, "retries of a request after a 429, a 5xx, a timeout or a dropped connection")
    backoff: float = _f(0.5, "first retry delay in seconds, doubled each retry (a Retry-After header wins when longer)")
    max_retry_after: float = _f(60.0, "longest Retry-After honoured; a longer one fails the request")
    stop_after: int = _f(5, "stop calling an endpoint after this many conversations in a row failed")
    max_requests: int = _f(0, "per-run cap on requests, retries included (0: none)")
    max_total_tokens: int = _f(0, "per-run cap on tokens, prompt and completion (0: none)")
    redact: bool = _f(True, "redact PII from what is sent (as push does for Argilla)")

    @classmethod
    def from_section(cls, section: Any, where: str | None = None) -> "EndpointSettings":
        """Validate a section table; errors name the key and what is allowed."""
        where = where or f"curate.toml [{cls.SECTION}]"
        if not isinstance(section, dict):
            raise SettingError(f"{where} must be a table")
        return cls(**_typed(cls, {**section}, where))

    @classmethod
    def resolve(cls, home: Path, endpoints: list[Endpoint] | None = None, **overrides: Any) -> "EndpointSettings":
        """Defaults < the curate.toml section < its environment variables < overrides; `endpoints`, when given,
        replace the file's."""
        values, origin = resolve_fields(cls, home, cls.SECTION, cls.ENV, overrides)
        where = config_section(home, cls.SECTION)[1]
        if endpoints is not None:
            values["endpoints"] = [_section_endpoint(cls, e, where) for e in endpoints]
        # a value out of range names where it came from: the file's section, the variable, or the argument
        sources = {name: source for name, source in origin.items() if not source.startswith(where)}
        return cls(**_typed(cls, values, where, sources))

    def require_endpoints(self) -> "EndpointSettings":
        """These settings, when they name at least one endpoint and no endpoint twice."""
        if not self.endpoints:
            raise ConfigError(self.NO_ENDPOINTS)
        _no_twice([e.key for e in self.endpoints], f"curate.toml [{self.SECTION}]", self.ROLE)
        return self


def public_url(url: str) -> str:
    """The URL without credentials of any kind, for logs, run params and provenance: no user:password@, and no
    query string or fragment (where keys and signatures travel: ?key=…, ?api-key=…, ?sig=…)."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


def check_endpoint(endpoint: Endpoint, where: str = "the endpoint") -> Endpoint:
    """Refuse an endpoint without a URL or model, or with values no server accepts."""
    if not endpoint.url or not endpoint.model:
        raise SettingError(f"{where}: needs both url and model")
    if urllib.parse.urlsplit(endpoint.url).scheme not in ("http", "https"):
        raise SettingError(f"{where}: url {public_url(endpoint.url)!r} must start with http:// or https://")
    if endpoint.n < 1 or endpoint.max_tokens < 1 or endpoint.temperature < 0:
        raise SettingError(f"{where}: n and max_tokens must be at least 1 and temperature 0 or more")
    return endpoint


def _typed(cls: type, values: dict, where: str, sources: dict[str, str] | None = None) -> dict:
    """Check names, types and ranges; endpoints become `Endpoint`s. A range error names `where`, or the value's
    source in `sources` (field name -> the variable or argument it came from)."""
    names = {f.name: f for f in fields(cls)}
    at = {**dict.fromkeys(names, where), **(sources or {})}
    out = {}
    for key, value in values.items():
        if key not in names:
            raise SettingError(f"{where}: unknown key {key!r}; allowed: {', '.join(names)}")
        if key == "endpoints":
            out[key] = _endpoints(cls, value, where)
            continue
        out[key] = convert(value, type(names[key].default), f"{where}: {key!r}")
    for name in ("concurrency", "stop_after"):
        if name in out and out[name] < 1:
            raise SettingError(f"{at[name]}: {name!r} must be at least 1, not {out[name]}")
    for name in ("timeout", "retries", "backoff", "max_retry_after", "max_requests", "max_total_tokens"):
        if name in out and out[name] < 0:
            raise SettingError(f"{at[name]}: {name!r} must be 0 or more, not {out[name]}")
    if out.get("timeout") == 0:
        raise SettingError(f"{at['timeout']}: 'timeout' must be more than 0 seconds")
    return out


def _endpoints(cls: type, value: Any, where: str) -> list[Endpoint]:
    if not isinstance(value, list):
        raise SettingError(f"{where}: 'endpoints' must be a list of tables ([[{cls.SECTION}.endpoints]])")
    out = []
    for i, item in enumerate(value):
        at = f"{where} endpoints[{i}]"
        if isinstance(item, Endpoint):
            out.append(_section_endpoint(cls, item, at))
            continue
        if not isinstance(item, dict):
            raise SettingError(f"{at} must be a table with url and model")
        known = {f.name: f for f in fields(Endpoint)}
        unknown = set(item) - set(known)
        if unknown:
            raise SettingError(f"{at}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(known)}")
        typed = {k: convert(v, type(known[k].default), f"{at}: {k!r}") for k, v in item.items()}
        out.append(_section_endpoint(cls, Endpoint(**{**cls.ENDPOINT_DEFAULTS, **typed}), at))
    _no_twice([e.key for e in out], where, cls.ROLE)
    return out


def _section_endpoint(cls: type, endpoint: Endpoint, where: str) -> Endpoint:
    """`endpoint`, checked, with the section's fixed keys (an explicit other value is an error)."""
    for key, value in cls.FIXED.items():
        if getattr(endpoint, key) != value:
            raise SettingError(f"{where}: {key} is always {value!r} in [{cls.SECTION}]; remove it")
    return check_endpoint(replace(endpoint), where)


def _no_twice(keys: list[str], where: str, role: str) -> None:
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise SettingError(f"{where}: two endpoints are both {role} {twice!r}; give each a different name")
