"""The one place where Curate talks to Argilla: connect, retry, and turn SDK/HTTP errors into CurateErrors.

`connect()` finds the server the way the SDK does (`ARGILLA_API_URL`, `ARGILLA_API_KEY`) and falls back to the
embedded server's address and key for this home. Push and pull use the SDK for resources (workspaces, datasets,
settings) and its own HTTP transport (`Connection.request`) for bulk record traffic, where building SDK objects
per record costs more than the server's work.
"""
from __future__ import annotations

import itertools
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from curation.errors import CurateError

# attempts per request: with the backoff below, about half a minute of a server being down or busy
RETRIES = 6  # default; CURATE_ANNOTATE_RETRIES overrides it
STARTING_WAIT_S = 300  # how long a client waits for the home's embedded server while it starts (rebuilding its index)
BACKOFF_S = 0.5
INSUFFICIENT_STORAGE = 507  # the embedded server's answer on a full disk: retrying soon does not help, the message says what does
TIMEOUT_S = 120


class AnnotationError(CurateError):
    """Argilla refused a request or could not be reached."""


class RefusedRequest(AnnotationError):
    """The server answered a request with a 4xx status (`status_code`)."""

    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class ServerUnreachable(AnnotationError):
    """No answer from the Argilla server after the retries."""


@dataclass
class Connection:
    """A connected SDK client (`.client`, an `argilla.Argilla`) and its HTTP transport (`.http`)."""

    url: str
    client: Any = field(repr=False)
    retries: int = RETRIES
    backoff_s: float = BACKOFF_S

    @property
    def http(self) -> httpx.Client:
        return self.client.api.http_client

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                headers: dict | None = None) -> Any:
        """One API call with retries and exponential backoff on connection errors, timeouts and 5xx; JSON back.

        Callers only send idempotent requests (upserts keyed by external id, reads), so retrying is safe.
        """
        content = None if json is None else orjson.dumps(json, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = {**({"Content-Type": "application/json"} if content is not None else {}), **(headers or {})} or None
        for attempt in range(self.retries):
            try:
                response = self.http.request(method, path, content=content, params=params, headers=headers)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500 or response.status_code == INSUFFICIENT_STORAGE:
                    _raise_for_status(response, self.url)
                    return orjson.loads(response.content) if response.content else None
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            if attempt + 1 < self.retries:
                time.sleep(self.backoff_s * 2**attempt * (0.5 + random.random()))
        raise ServerUnreachable(
            f"the Argilla server at {self.url} did not answer ({error}) after {self.retries} tries; "
            "start it with `curate annotate serve` or set ARGILLA_API_URL / ARGILLA_API_KEY"
        )


def address(api_url: str | None = None, api_key: str | None = None, home: str | os.PathLike | None = None) -> tuple[str, str]:
    """(URL, API key) of the Argilla server: explicit arguments > ARGILLA_API_URL / ARGILLA_API_KEY > the embedded
    server of `home` (at the address it serves on, when it runs or starts, else the configured one)."""
    if not (api_url or os.environ.get("ARGILLA_API_URL")) or not (api_key or os.environ.get("ARGILLA_API_KEY")):
        from annotations.server.lock import serving
        from annotations.server.settings import ServerSettings

        embedded = ServerSettings.resolve(home)
        api_url = api_url or os.environ.get("ARGILLA_API_URL") or (serving(embedded) or {}).get("url") or embedded.url
        api_key = api_key or os.environ.get("ARGILLA_API_KEY") or embedded.api_key
    return (api_url or os.environ["ARGILLA_API_URL"]).rstrip("/"), api_key or os.environ["ARGILLA_API_KEY"]


def connect(api_url: str | None = None, api_key: str | None = None, home: str | os.PathLike | None = None,
            retries: int | None = None) -> Connection:
    """Connect to Argilla at `address(api_url, api_key, home)`. When that is the embedded server of `home` and it is
    still starting (it holds the home's server lock; `curate annotate serve &` just ran), wait for it up to
    `STARTING_WAIT_S` beyond the usual retries."""
    import argilla as rg

    embedded = not (api_url or os.environ.get("ARGILLA_API_URL"))
    api_url, api_key = address(api_url, api_key, home)
    retries = retries or int(os.environ.get("CURATE_ANNOTATE_RETRIES", RETRIES))
    last: Exception | None = None
    deadline = None
    for attempt in itertools.count():
        try:
            # the SDK retries the TCP connect itself; it then checks the key with GET /api/v1/me
            client = rg.Argilla(api_url=api_url, api_key=api_key, timeout=TIMEOUT_S, retries=1)
            return Connection(api_url, client, retries=retries)
        except Exception as exc:  # the SDK raises httpx and its own errors here; mapped below
            mapped = map_error(exc, api_url)
            if not isinstance(mapped, ServerUnreachable):
                raise mapped from None
            last = mapped
        if attempt + 1 < retries:
            time.sleep(BACKOFF_S * 2**attempt)
            continue
        deadline = deadline or time.monotonic() + STARTING_WAIT_S
        if not (embedded and _starting(home)) or time.monotonic() > deadline:
            raise last  # type: ignore[misc]
        time.sleep(1.0)


def _starting(home: str | os.PathLike | None) -> bool:
    from annotations.server.lock import serving
    from annotations.server.settings import ServerSettings

    return serving(ServerSettings.resolve(home)) is not None


def map_error(exc: BaseException, url: str) -> AnnotationError:
    """An SDK or HTTP exception as an AnnotationError whose message says what to do."""
    from argilla._exceptions import ArgillaCredentialsError
    from argilla._exceptions._api import ArgillaAPIError

    if isinstance(exc, AnnotationError):
        return exc
    if isinstance(exc, ArgillaCredentialsError) or getattr(exc, "status_code", None) == 401:
        return AnnotationError(f"the Argilla server at {url} refused the API key; set ARGILLA_API_KEY to a valid key")
    if isinstance(exc, (httpx.TransportError, httpx.TimeoutException)) or isinstance(exc.__cause__, httpx.TransportError):
        return ServerUnreachable(
            f"cannot reach the Argilla server at {url}; start it with `curate annotate serve` "
            "or set ARGILLA_API_URL / ARGILLA_API_KEY"
        )
    if isinstance(exc, ArgillaAPIError):
        return AnnotationError(f"the Argilla server at {url} refused the request: {str(exc).splitlines()[0][:300]}")
    return AnnotationError(f"Argilla SDK error talking to {url}: {type(exc).__name__}: {str(exc)[:300]}")


def _raise_for_status(response: httpx.Response, url: str) -> None:
    if response.status_code < 400:
        return
    if response.status_code == 401:
        raise AnnotationError(f"the Argilla server at {url} refused the API key; set ARGILLA_API_KEY to a valid key")
    try:
        detail = orjson.loads(response.content).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        detail = response.text
    raise RefusedRequest(
        f"the Argilla server at {url} answered {response.status_code} to {response.request.method} "
        f"{response.request.url.path}: {str(detail)[:300]}",
        response.status_code,
    )
