"""An optional labeller that asks an OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp, OpenAI…) to name
each cluster. Off by default: `curate cluster --labeller llm --llm-url URL --llm-model NAME`, or curate.toml
`[cluster.labeller]`.

Keywords stay c-TF-IDF (`CTfidfLabeller`); the model only turns them and a few of the cluster's most central user
texts into a label of at most eight words. What leaves the machine, per cluster that has at least `min_users`
distinct users (the privacy threshold): its keywords and up to `max_examples` user texts, each cut to `max_chars`.
When the endpoint fails, the cluster keeps its c-TF-IDF label and one warning names the endpoint; clustering goes on.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from curation.cluster.labels import CTfidfLabeller
from curation.cluster.rank import MIN_USERS, distinct_users, has_user_ids
from curation.endpoints import Budget, ChatClient, Endpoint, EndpointError, EndpointSettings, public_url

log = logging.getLogger("curate.cluster")
API_KEY_ENV = "CURATE_LLM_API_KEY"
SYSTEM = ("You name clusters of requests that users sent to a chatbot. Reply with one label of at most {words} "
          "words that says what the requests have in common (topic or task). Reply with the label only: no quotes, "
          "no explanation.")


class LLMLabeller:
    """Label clusters with a chat model; `label({id: [texts]}) -> {id: (label, keywords)}` like `CTfidfLabeller`.

    Texts are expected most central first (as `cluster()` passes them); clusters are asked in id order, at
    temperature 0. `store`, when given, enforces the privacy threshold: clusters with fewer than `min_users`
    distinct users are not sent (the rule is off when the store has no user ids, as in `rank_clusters`).
    After `label`, `stats_` counts {"labelled", "failed", "private"} and holds the first "error".
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 30.0,
                 max_examples: int = 5, max_chars: int = 300, max_words: int = 8, max_tokens: int = 64,
                 store: Any = None, min_users: int = MIN_USERS, keywords: Any = None):
        self.base_url = base_url
        self.model = model
        self.api_key = api_key  # None: $CURATE_LLM_API_KEY at call time
        self.timeout = timeout
        self.max_examples = max_examples
        self.max_chars = max_chars
        self.max_words = max_words
        self.max_tokens = max_tokens
        self.store = store
        self.min_users = min_users
        self.keywords = keywords

    def label(self, texts: dict[int, list[str]]) -> dict[int, tuple[str, list[str]]]:
        out = (self.keywords or CTfidfLabeller()).label(texts)
        private = self._private(list(out))
        key = self.api_key if self.api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.stats_: dict[str, Any] = {"labelled": 0, "failed": 0, "private": len(private), "error": None}
        hint, stopped = "", False
        # one request per cluster, not retried: a label is a courtesy, and a failing endpoint must not slow clustering
        endpoint = Endpoint(url=self.base_url, model=self.model, temperature=0, max_tokens=self.max_tokens)
        client = ChatClient(EndpointSettings(timeout=self.timeout, concurrency=1, retries=0), Budget(),
                            threading.Event(), {endpoint.key: key})
        try:
            for cid in sorted(out):
                if cid in private:
                    continue
                if stopped:
                    self.stats_["failed"] += 1
                    continue
                keywords = out[cid][1]
                try:
                    answer = client.complete(endpoint, self._messages(keywords, texts[cid]), max_body=1_000_000).text
                    name = clean_label(answer, self.max_words)
                    if not name:
                        raise ValueError("the answer held no label")
                except Exception as exc:  # any endpoint fault keeps the c-TF-IDF label
                    self.stats_["failed"] += 1
                    reason, fix, fatal = _diagnose(exc, self.timeout)
                    if self.stats_["error"] is None or fatal:  # the warning names the error that stopped the calls
                        self.stats_["error"], hint = _redact(reason, key), fix
                    stopped = fatal
                    continue
                out[cid] = (name, keywords)
                self.stats_["labelled"] += 1
        finally:
            client.close()
        if self.stats_["failed"]:
            log.warning("curate: LLM labeller at %s: %d of %d clusters kept their c-TF-IDF label (%s)%s; %s",
                        public_url(self.base_url), self.stats_["failed"], len(out) - len(private),
                        self.stats_["error"], "; stopped calling it after that" if stopped else "", hint)
        return out

    def _private(self, ids: list[int]) -> set[int]:
        if self.store is None or not ids:
            return set()
        if not has_user_ids(self.store):
            return set()
        users = distinct_users(self.store)  # the assignments of this run are written before it labels
        return {cid for cid in ids if users.get(cid, 0) < self.min_users}

    def _messages(self, keywords: list[str], texts: list[str]) -> list[dict]:
        examples = [" ".join(t.split())[: self.max_chars] for t in texts[: self.max_examples]]
        body = f"Keywords: {', '.join(keywords)}\n\nExample requests:\n" + "\n".join(f"- {e}" for e in examples)
        return [{"role": "system", "content": SYSTEM.format(words=self.max_words)},
                {"role": "user", "content": body + "\n\nLabel:"}]


def clean_label(answer: str, max_words: int = 8, max_chars: int = 80) -> str:
    """The first line that names something, without reasoning blocks, markdown, a "Label:" prefix or quotes."""
    answer = re.sub(r"<think>.*?(</think>|$)", " ", answer, flags=re.DOTALL | re.IGNORECASE)
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    line = next((x for x in lines if not x.endswith(":")), "")  # skip a preamble like "Here is a label:"
    line = re.sub(r"[*`]+", "", line)
    line = re.sub(r"^(#+|[-•]|\d+[.)])\s+", "", line)
    line = re.sub(r"^(cluster\s+)?(label|topic|name|title)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip(" \t\"'“”‘’«»_").rstrip(".!;:,").strip(" \"'“”‘’«»")
    return " ".join(line.split()[:max_words])[:max_chars].strip()


def _diagnose(exc: Exception, timeout: float) -> tuple[str, str, bool]:
    """(what happened, what to check, whether to stop calling) for one failed request."""
    kind = getattr(exc, "kind", None) if isinstance(exc, EndpointError) else None
    if kind == "http" and exc.status is not None:
        reason = str(exc).split(" (after ")[0].split("; check")[0]
        if exc.status in (401, 403):
            return reason, f"check the API key in ${API_KEY_ENV}", True
        if exc.status == 404:
            return reason, "check that the URL is the API base (often ending in /v1) and the model is served", True
        return reason, "check the server's log", False
    if kind == "timeout":
        return f"no answer within {timeout:g}s", "check that the server is up, or raise the timeout", True
    if kind == "connect":
        return f"cannot connect: {str(exc).split(' (after ')[0]}", "check that the server is running and the URL is right", True
    cause = exc.cause if isinstance(exc, EndpointError) and exc.cause else type(exc).__name__
    return f"unexpected answer: {cause}: {str(exc)[:80]}", \
        "check that the URL serves OpenAI-compatible chat completions", False


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def make_labeller(store: Any, **overrides: Any) -> CTfidfLabeller | LLMLabeller:
    """The labeller that curate.toml `[cluster.labeller]`, the environment and `overrides` (kind, url, model, …) ask for."""
    from curation.config import LabellerSettings

    settings = LabellerSettings.resolve(store.home, **overrides)
    if settings.kind == "ctfidf":
        return CTfidfLabeller()
    return LLMLabeller(settings.url, settings.model, timeout=settings.timeout, max_examples=settings.max_examples,
                       max_chars=settings.max_chars, store=store,
                       min_users=MIN_USERS if settings.min_users is None else settings.min_users)
