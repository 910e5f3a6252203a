"""`curate judge`: rate conversations through the configured judge endpoints, caching each judgement.

A judgement is keyed by (conversation, content hash, judge model, rubric version). A conversation whose content was
judged under the current rubric by any configured judge's model is cached: it keeps the judge that first judged it,
and a rerun asks nothing. A new rubric file (another hash) or a model no configured endpoint serves judges again.
Several endpoints share the load: each request goes to the endpoint with the fewest requests in flight.

Judgements are committed in small batches with insert-or-ignore, so `kill -9` loses at most one batch and a rerun
asks only for what is missing. The caps, retries, redaction and stop rules are generate's (`curation.endpoints`):
an endpoint that fails `stop_after` conversations in a row, or fails fatally, is no longer called in that run.
An answer that holds no valid judgement is asked once more, then the conversation counts as failed.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import sqlalchemy as sa

from curation.endpoints import (Budget, Capped, ChatClient, Endpoint, EndpointError, RunState, api_keys, public_url,
                                run_batched)
from curation.errors import ConfigError, CurateError
from curation.judge.answer import SCHEMA, parse, transcript
from curation.judge.config import JudgeSettings, Rubric, load_rubric
from curation.judge.store import judged_keys, write_judgements
from curation.messages import last_reply_index
from curation.store import Store, loads, stored_messages, utcnow
from curation.store.failure_tables import failure_scores
from curation.store.judge_tables import ATTRIBUTES
from curation.store.tables import conversations

FLUSH_ROWS, FLUSH_S = 64, 0.5  # judgements are committed in small batches: a kill loses at most this much work
MAX_ANSWER = 1 << 20  # bytes; a longer answer is no judgement
CHUNK = 5_000


class Unparseable(EndpointError):
    """The answer held no valid judgement, twice."""


@dataclass
class _Job:
    conversation_id: str
    content_hash: str
    messages: list[dict]


class Judge:
    """Judges given conversations: `Judge(settings, redact=Redactor().redact).judge(store, ids=... | budget=... |
    every=True) -> summary`. `redact` (text -> text) is required while `settings.redact` is on; the CLI and the
    loop pass annotations' PII redactor, as push does for Argilla."""

    def __init__(self, settings: JudgeSettings, redact: Callable[[str], str] | None = None, rubric: Rubric | None = None):
        self.settings = settings.require_endpoints()
        if settings.redact and redact is None:
            raise ConfigError("the judge redacts PII before anything is sent: pass redact=Redactor().redact "
                              "(annotations.pii), or set [judge] redact = false")
        self.redact = redact if settings.redact else (lambda text: text)
        self.rubric = rubric
        self.no_schema: set[str] = set()  # endpoints that refused `response_format`; asked without it from then on
        self._in_flight = {e.key: 0 for e in self.settings.endpoints}
        self._lock = threading.Lock()
        self._unparseable = 0

    def judge(self, store: Store, ids: Sequence[str] | None = None, budget: int | None = None, every: bool = False,
              progress: bool | None = None) -> dict:
        """Judge what is missing. Returns {"judged", "cached", "failed", "unparseable", "requests", "tokens",
        "status", "run_id", "skipped", "capped", "cap", "errors", "models", "rubric_version"}."""
        if sum(x is not None and x is not False for x in (ids, budget, every)) != 1:
            raise CurateError("say what to judge: --budget N, --ids ID... or --all")
        if budget is not None and budget < 0:
            raise CurateError("--budget must be 0 or more")
        rubric = self.rubric or load_rubric(store.home, self.settings.rubric)
        settings = self.settings
        params = {"endpoints": [{"key": e.key, "model": e.model, "url": public_url(e.url)} for e in settings.endpoints],
                  "rubric_version": rubric.version, "rubric": rubric.source,
                  "ids": len(ids) if ids is not None else None, "budget": budget, "all": every}
        state = RunState(settings.stop_after, Budget(settings.max_requests, settings.max_total_tokens))
        counts = {"cached": 0, "skipped": 0}
        self._unparseable = 0
        with store.run("judge", params) as run:
            run.progress = lambda: self._summary(state, counts)
            jobs = list(self._jobs(store, rubric, ids, budget, counts))
            self._run(store, jobs, state, rubric, run.id, progress)
            result = {**self._summary(state, counts), "run_id": run.id, "rubric_version": rubric.version,
                      "models": sorted({e.model for e in settings.endpoints})}
            result["status"] = "partial" if result["failed"] or result["capped"] else "done"
            return run.finish(result, result["status"])

    def _summary(self, state: RunState, counts: dict) -> dict:
        summary = state.summary("judged")
        return {**summary, **counts, "unparseable": self._unparseable}

    def _jobs(self, store: Store, rubric: Rubric, ids: Sequence[str] | None, budget: int | None,
              counts: dict) -> Iterator[_Job]:
        """The conversations to ask about, in order; counts those cached and those without a reply."""
        models = {e.model for e in self.settings.endpoints}
        wanted = None if budget is None else budget
        for chunk in _candidates(store, ids, budget is not None):
            with store.connect() as conn:
                done = judged_keys(conn, [cid for cid, _ in chunk], rubric.version)
            for cid, text in chunk:
                messages = loads(text) or []
                if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages) \
                        or last_reply_index(messages) is None:
                    counts["skipped"] += 1
                    continue
                content_hash = hashlib.sha256(text.encode()).hexdigest()
                if done.get((cid, content_hash), set()) & models:
                    counts["cached"] += 1
                    continue
                if wanted is not None:
                    if wanted <= 0:
                        return
                    wanted -= 1
                yield _Job(cid, content_hash, messages)

    def _run(self, store: Store, jobs: list[_Job], state: RunState, rubric: Rubric, run_id: str,
             progress: bool | None) -> None:
        if not jobs:
            return
        stop = threading.Event()
        client = ChatClient(self.settings, state.budget, stop, api_keys(self.settings.endpoints, "judge"))

        def keep(job: _Job, outcome: tuple[Endpoint | None, Any]) -> dict | None:
            endpoint, result = outcome
            judged = state.record(endpoint.key if endpoint else "(none)", result)
            return None if judged is None else _row(job, endpoint, judged, rubric, run_id)

        try:
            run_batched(jobs, lambda job: self._one(client, state, rubric, job), keep, lambda rows: _flush(store, rows),
                        self.settings.concurrency, flush_rows=FLUSH_ROWS, flush_s=FLUSH_S, name="judge", unit="conv",
                        progress=progress)
        finally:
            stop.set()
            client.close()

    def _one(self, client: ChatClient, state: RunState, rubric: Rubric, job: _Job) -> tuple[Endpoint | None, Any]:
        """Runs in a worker: (the endpoint asked, the judgement or the exception that stopped it); never raises."""
        endpoint = self._take(state)
        if endpoint is None:
            return None, EndpointError("every judge endpoint stopped in this run")
        try:
            messages = [{"role": "system", "content": rubric.text},
                        {"role": "user", "content": transcript(job.messages, self.redact, self.settings.max_chars)}]
            for attempt in (1, 2):
                answer = self._ask(client, endpoint, messages)
                if isinstance(answer, EndpointError) and answer.kind != "answer":
                    return endpoint, answer
                judged = None if isinstance(answer, EndpointError) else parse(answer.text)
                if judged is not None:
                    return endpoint, {**judged, "tokens": answer.tokens}
                with self._lock:
                    self._unparseable += 1
            reason = str(answer) if isinstance(answer, EndpointError) else f"no judgement in {answer.text[:120]!r}"
            return endpoint, Unparseable(f"unparseable answer, twice: {reason}", kind="answer")
        except Capped as exc:
            return endpoint, exc
        except Exception as exc:  # noqa: BLE001 -- an unexpected fault fails this conversation, not the run
            return endpoint, EndpointError(f"{type(exc).__name__}: {str(exc)[:160]}")
        finally:
            with self._lock:
                self._in_flight[endpoint.key] -= 1

    def _ask(self, client: ChatClient, endpoint: Endpoint, messages: list[dict]) -> Any:
        """The completion, or the EndpointError it ended with; `response_format` is dropped for good on an endpoint
        that answers 400 about it."""
        while True:
            schema = endpoint.key not in self.no_schema
            try:
                return client.complete(endpoint, messages, extra={"response_format": SCHEMA} if schema else None,
                                       max_body=MAX_ANSWER)
            except EndpointError as exc:
                if schema and _refuses_schema(exc):
                    with self._lock:
                        self.no_schema.add(endpoint.key)
                    continue
                return exc

    def _take(self, state: RunState) -> Endpoint | None:
        """The live endpoint with the fewest requests in flight (counted until the worker is done)."""
        with self._lock:
            live = [e for e in self.settings.endpoints if not state.stopped(e.key)]
            if not live:
                return None
            endpoint = min(live, key=lambda e: self._in_flight[e.key])
            self._in_flight[endpoint.key] += 1
            return endpoint


def _refuses_schema(exc: EndpointError) -> bool:
    text = str(exc).lower()
    return exc.status in (400, 422) and any(w in text for w in ("response_format", "json_schema", "schema",
                                                                 "structured", "guided"))


def _candidates(store: Store, ids: Sequence[str] | None, by_failure: bool) -> Iterator[list[tuple[str, str]]]:
    """Chunks of (id, stored messages): `ids` in their order; else every conversation, most likely failures first
    when `by_failure` (then newest first)."""
    if ids is not None:
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            with store.connect() as conn:
                rows = dict(stored_messages(conn, chunk))
            yield [(cid, rows[cid]) for cid in chunk if cid in rows]
        return
    query = sa.select(conversations.c.id, conversations.c.messages)
    if by_failure:
        query = (query.outerjoin(failure_scores, failure_scores.c.conversation_id == conversations.c.id)
                 .order_by(sa.func.coalesce(failure_scores.c.failure_score, -1.0).desc(),
                           conversations.c.created_at.desc(), conversations.c.id))
    else:
        query = query.order_by(conversations.c.id)
    with store.connect() as conn:
        result = conn.execution_options(yield_per=CHUNK).execute(query)
        for part in result.partitions(CHUNK):
            yield [tuple(row) for row in part]


def _row(job: _Job, endpoint: Endpoint, judged: dict, rubric: Rubric, run_id: str) -> dict:
    return {"conversation_id": job.conversation_id, "content_hash": job.content_hash, "model": endpoint.model,
            "rubric_version": rubric.version, "endpoint": endpoint.key, **{k: judged[k] for k in ATTRIBUTES},
            "rationale": judged["rationale"], "status": "ok", "tokens": judged["tokens"], "judged_at": utcnow(),
            "run_id": run_id}


def _flush(store: Store, rows: list[dict]) -> None:
    with store.begin() as conn:
        write_judgements(conn, rows)

