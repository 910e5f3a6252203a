"""One chat completion from an OpenAI-compatible endpoint, bounded and retried; the only HTTP code of generation.

The answer may be JSON or a server-sent event stream: some servers (`transformers serve` 4.57) stream even when
`stream` is false, so both are read. A 429, a 5xx, a timeout or a dropped connection is retried with exponential
backoff and jitter; a `Retry-After` header sets the delay when it is longer, and holds back every worker that calls
the same endpoint until then. Other 4xx answers are not retried. `Budget` enforces the per-run caps on requests and
tokens across all workers; `stop` (a threading.Event) ends waits at once when the run is interrupted.
"""
from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from annotations.generate.config import Endpoint, GenerateSettings, public_url

MAX_BODY = 8 << 20  # bytes read from one answer; a longer one is an error, not a memory problem
CHARS_PER_TOKEN = 4  # the estimate used when an endpoint reports no `usage`
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}
log = logging.getLogger("curate.generate")


class GenerationFailed(Exception):
    """A candidate could not be generated. `fatal`: no request to this endpoint can succeed (auth, URL, model)."""

    def __init__(self, reason: str, fatal: bool = False):
        super().__init__(reason)
        self.fatal = fatal


class Capped(Exception):
    """A per-run cap (requests or tokens) is reached; `kind` names it."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


@dataclass
class Completion:
    text: str
    tokens: int  # prompt + completion, as reported, else estimated
    usage: dict | None  # the endpoint's `usage`, when it sent one
    response_id: str | None
    finish_reason: str | None


class Budget:
    """The per-run caps, shared by all workers. A request is counted before it is sent; tokens when it answers."""

    def __init__(self, max_requests: int = 0, max_total_tokens: int = 0):
        self.max_requests = max_requests
        self.max_total_tokens = max_total_tokens
        self.requests = 0
        self.tokens = 0
        self.capped: str | None = None
        self._lock = threading.Lock()

    def take_request(self) -> None:
        with self._lock:
            if self.max_total_tokens and self.tokens >= self.max_total_tokens:
                self.capped = self.capped or "tokens"
            elif self.max_requests and self.requests >= self.max_requests:
                self.capped = self.capped or "requests"
            if self.capped:
                raise Capped(self.capped)
            self.requests += 1

    def add_tokens(self, n: int) -> None:
        with self._lock:
            self.tokens += n


class ChatClient:
    """Sends chat completions for `settings.endpoints`; thread-safe, one connection pool for the whole run."""

    def __init__(self, settings: GenerateSettings, budget: Budget, stop: threading.Event, keys: dict[str, str | None]):
        self.settings = settings
        self.budget = budget
        self.stop = stop
        self.keys = keys  # endpoint key -> API key
        self._not_before: dict[str, float] = {}  # endpoint key -> monotonic time before which nobody calls it
        self._lock = threading.Lock()
        self.http = httpx.Client(
            timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency),
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    def complete(self, endpoint: Endpoint, messages: list[dict], seed: int) -> Completion:
        """One candidate: retries as the settings allow; raises GenerationFailed, or Capped before any request."""
        payload = {"model": endpoint.model, "messages": messages, "temperature": endpoint.temperature,
                   "max_tokens": endpoint.max_tokens, "seed": seed, "stream": False}
        key = self.keys.get(endpoint.key)
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   **({"Authorization": f"Bearer {key}"} if key else {})}
        body = orjson.dumps(payload)
        prompt_chars = sum(len(m.get("content") or "") for m in messages)
        attempt, failure = 0, ""
        while True:
            self._wait_turn(endpoint.key)
            try:
                self.budget.take_request()
            except Capped as cap:  # after a failed attempt, the candidate failed: the cap only stopped its retries
                if attempt:
                    raise GenerationFailed(f"{failure} (the per-run {cap.kind} cap stopped its retries)") from None
                raise
            try:
                completion = self._send(endpoint, body, headers, prompt_chars)
                self.budget.add_tokens(completion.tokens)
                return completion
            except _Retry as retry:
                if attempt >= self.settings.retries:
                    raise GenerationFailed(f"{retry.reason} (after {attempt + 1} attempts)") from None
                if retry.after is not None and retry.after > self.settings.max_retry_after:
                    raise GenerationFailed(f"{retry.reason}: Retry-After {retry.after:g}s is longer than "
                                           f"max_retry_after {self.settings.max_retry_after:g}s") from None
                delay = self.settings.backoff * (2 ** attempt) * random.uniform(0.75, 1.25)
                if retry.after is not None:
                    delay = max(delay, retry.after)
                    self._hold(endpoint.key, retry.after)
                attempt, failure = attempt + 1, retry.reason
                log.debug("generator %s: %s; retry %d in %.2fs", endpoint.key, retry.reason, attempt, delay)
                if self.stop.wait(delay):
                    raise GenerationFailed("run stopped") from None

    def _wait_turn(self, key: str) -> None:
        """Wait out a Retry-After that another worker received from this endpoint."""
        while True:
            with self._lock:
                left = self._not_before.get(key, 0.0) - time.monotonic()
            if left <= 0:
                return
            if self.stop.wait(left):
                raise GenerationFailed("run stopped")

    def _hold(self, key: str, seconds: float) -> None:
        with self._lock:
            self._not_before[key] = max(self._not_before.get(key, 0.0), time.monotonic() + seconds)

    def _send(self, endpoint: Endpoint, body: bytes, headers: dict, prompt_chars: int) -> Completion:
        deadline = time.monotonic() + self.settings.timeout
        try:
            with self.http.stream("POST", endpoint.chat_url, content=body, headers=headers) as response:
                if response.status_code != 200:
                    detail = _detail(response)
                    if response.status_code in RETRYABLE:
                        raise _Retry(f"HTTP {response.status_code}{detail}", _retry_after(response))
                    fatal = response.status_code in (401, 403, 404)
                    hint = {401: "; " + endpoint.key_hint(),
                            403: "; check the key's permissions", 404: "; check the URL (the API base, often ending in "
                            "/v1) and that the model is served"}.get(response.status_code, "")
                    raise GenerationFailed(f"HTTP {response.status_code}{detail}{hint}", fatal=fatal)
                if "text/event-stream" in response.headers.get("content-type", ""):
                    return _read_stream(response, deadline, prompt_chars)
                return _read_json(response, deadline, prompt_chars)
        except httpx.TimeoutException:
            raise _Retry(f"no answer within {self.settings.timeout:g}s") from None
        except (httpx.TransportError, httpx.StreamError) as exc:  # refused, reset, closed mid-answer
            raise _Retry(f"connection to {public_url(endpoint.url)} failed: {type(exc).__name__}: {str(exc)[:120]}") from None


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.after = after


def _read_json(response: httpx.Response, deadline: float, prompt_chars: int) -> Completion:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        _check_progress(len(data), deadline)
    try:
        answer = orjson.loads(bytes(data))
        choice = answer["choices"][0]
        text = choice["message"].get("content") or ""
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        raise GenerationFailed(f"not a chat completion: {bytes(data[:120])!r}") from None
    if not isinstance(text, str):
        raise GenerationFailed("choices[0].message.content is not text")
    return _completion(text, answer.get("usage"), answer.get("id"), choice.get("finish_reason"), prompt_chars)


def _read_stream(response: httpx.Response, deadline: float, prompt_chars: int) -> Completion:
    """Join the deltas of choice 0 from `data:` events, up to `[DONE]` or the end of the stream."""
    parts: list[str] = []
    usage = response_id = finish = None
    size = 0
    for line in response.iter_lines():
        size += len(line)
        _check_progress(size, deadline)
        if not line.startswith("data:"):
            continue  # comments, event names, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise GenerationFailed(f"unreadable stream event: {data[:120]!r}") from None
        if not isinstance(event, dict):
            continue
        if event.get("error"):
            raise _Retry(f"the server reported an error mid-answer: {str(event['error'])[:120]}")
        response_id = response_id or event.get("id")
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            content = (choice.get("delta") or choice.get("message") or {}).get("content")
            if isinstance(content, str):
                parts.append(content)
            finish = choice.get("finish_reason") or finish
    return _completion("".join(parts), usage, response_id, finish, prompt_chars)


def _completion(text: str, usage: Any, response_id: Any, finish: Any, prompt_chars: int) -> Completion:
    usage = usage if isinstance(usage, dict) else None
    reported = usage.get("total_tokens") if usage else None
    if not isinstance(reported, int):
        reported = -(-(prompt_chars + len(text)) // CHARS_PER_TOKEN)
    if not text.strip():
        raise GenerationFailed("the endpoint answered with an empty response")
    return Completion(text, reported, usage, str(response_id) if response_id else None,
                      str(finish) if finish else None)


def _check_progress(size: int, deadline: float) -> None:
    if size > MAX_BODY:
        raise GenerationFailed(f"the answer is longer than {MAX_BODY >> 20} MiB")
    if time.monotonic() > deadline:
        raise _Retry("the answer took longer than the timeout")


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(response: httpx.Response) -> str:
    try:
        response.read()
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error or (body.get("detail") if isinstance(body, dict) else None)
    except Exception:  # the detail is a courtesy
        message = None
    return f": {str(message)[:160]}" if message else ""
