"""Candidate responses for routed conversations, so that one-response traffic still yields preference pairs.

For each chosen conversation without a sibling (another reply to the same context), every configured endpoint
writes `n` candidate replies to the same context. Each candidate is stored as a sibling conversation: the parent's
context, the candidate as the last assistant message, `source = "generated"`, the generator's model in `model`, and
its provenance in `metadata["generated"]` (parent id, generator, parameters, seed, usage). `annotate push --pairs`
then shows it as the other response of a preference record, in a random order (see `annotations.push.shown_swapped`).

A candidate's id is a hash of (parent, generator, index), written with insert-or-ignore, so a rerun after a crash
or `kill -9` asks only for what is missing and no (conversation, generator) ever gets a second candidate, even when
two runs overlap. A generator is its endpoint's name, else its model (`Endpoint.key`), not its URL. An endpoint that keeps failing is no longer
called in that run (`stop_after`); its conversations stay single-response, are counted in `failed`, and the run ends
`partial`, as it does when a per-run cap stops it.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import sqlalchemy as sa
from tqdm import tqdm

from annotations.generate.client import Budget, Capped, ChatClient, Completion, GenerationFailed
from annotations.generate.config import Endpoint, GenerateSettings, public_url
from annotations.pii import Redactor
from curation.config import IngestSettings
from curation.errors import CurateError
from curation.ingest.records import Limits, Reject, check_messages
from curation.messages import content_text
from curation.store import Store, dumps, existing_ids, insert_rows, loads, utcnow
from curation.store.tables import GENERATED, conversations

__all__ = ["SOURCE", "Endpoint", "GenerateSettings", "Generator", "candidate_id", "generate"]

SOURCE = GENERATED  # conversations.source of a candidate
FLUSH_ROWS, FLUSH_S = 32, 0.5  # candidates are committed in small batches: a kill loses at most this much work


def candidate_id(conversation_id: str, endpoint: Endpoint, index: int = 0) -> str:
    """The id of candidate `index` that `endpoint` writes for `conversation_id`: the same on every run."""
    digest = hashlib.sha256(f"{conversation_id}\x1f{endpoint.key}\x1f{index}".encode()).hexdigest()
    return f"gen-{digest[:40]}"


@dataclass
class _Job:
    parent: str
    endpoint: Endpoint
    index: int
    id: str
    context: list[dict]  # the parent's messages before its last reply, as stored
    sent: list[dict]  # what the endpoint is sent: the context, redacted
    seed: int


class Generator:
    """Writes candidates for given conversations: `Generator(settings).generate(store, ids) -> summary`.

    Push takes one as its `generator` (so `annotations.push` does not depend on this module).
    """

    def __init__(self, settings: GenerateSettings, redactor: Redactor | None = None):
        self.settings = settings.require_endpoints()
        self.redactor = redactor or Redactor()

    def generate(self, store: Store, conversation_ids: Sequence[str], progress: bool | None = None) -> dict:
        """Generate what is missing for `conversation_ids`. Returns {"conversations", "generated", "failed",
        "requests", "tokens", "existing", "capped", "skipped", "status", "errors", "run_id"}."""
        settings = self.settings
        keys = _api_keys(settings.endpoints)
        run_id = store.start_run("generate", {"conversations": len(conversation_ids),
                                              "endpoints": [e.key for e in settings.endpoints],
                                              "settings": _public_settings(settings)})
        state = _RunState(settings, Budget(settings.max_requests, settings.max_total_tokens))
        try:
            jobs, wanted, existing, skipped = self._jobs(store, conversation_ids)
            ingest = IngestSettings.resolve(store.home)  # a candidate must be one that ingest would store
            self._run(store, jobs, state, run_id, keys, Limits(ingest.max_messages, ingest.max_chars), progress)
        except BaseException as exc:
            store.finish_run(run_id, "failed", {**state.summary(), "error": str(exc)[:500] or type(exc).__name__})
            raise
        result = {"conversations": wanted, **state.summary(), "existing": existing, "skipped": skipped,
                  "run_id": run_id}
        result["status"] = "partial" if result["failed"] or result["capped"] else "done"
        store.finish_run(run_id, result["status"], result)
        return result

    def _jobs(self, store: Store, ids: Sequence[str]) -> tuple[list[_Job], int, int, int]:
        """The candidates still missing; also how many conversations want some, how many candidates exist, and how
        many conversations have no reply to generate an alternative to."""
        ids = list(dict.fromkeys(ids))
        rows: dict[str, Any] = {}
        with store.connect() as conn:
            for start in range(0, len(ids), 5_000):
                chunk = ids[start : start + 5_000]
                rows.update(conn.execute(sa.select(conversations.c.id, conversations.c.messages)
                                         .where(conversations.c.id.in_(chunk))).all())
        planned: list[_Job] = []
        wanted = skipped = 0
        for parent in ids:
            messages = loads(rows.get(parent)) or []
            last = last_reply(messages)
            if last is None:
                skipped += 1
                continue
            wanted += 1
            context = messages[:last]
            sent = self._messages(context)
            for endpoint in self.settings.endpoints:
                for index in range(endpoint.n):
                    cid = candidate_id(parent, endpoint, index)
                    seed = int.from_bytes(hashlib.sha256(f"{self.settings.seed}:{cid}".encode()).digest()[:4], "big") >> 1
                    planned.append(_Job(parent, endpoint, index, cid, context, sent, seed))
        with store.connect() as conn:
            done = existing_ids(conn, conversations.c.id, [j.id for j in planned])
        return [j for j in planned if j.id not in done], wanted, len(done), skipped

    def _run(self, store: Store, jobs: list[_Job], state: "_RunState", run_id: str, keys: dict[str, str | None],
             limits: Limits, progress: bool | None) -> None:
        if not jobs:
            return
        stop = threading.Event()
        client = ChatClient(self.settings, state.budget, stop, keys)
        pending_rows: list[dict] = []
        last_flush = time.monotonic()
        queue = iter(jobs)
        pool = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="curate-generate")
        bar = tqdm(total=len(jobs), unit="cand", desc="generate", disable=None if progress is None else not progress)
        try:
            # at most `concurrency` jobs are submitted at a time, so a stopped endpoint or a cap ends the run quickly
            running: dict[Future, _Job] = {}
            for job in queue:
                running[pool.submit(self._one, client, state, job, limits)] = job
                if len(running) >= self.settings.concurrency:
                    break
            while running:
                done, _ = wait(running, timeout=FLUSH_S, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    row = state.record(job, future.result())
                    if row is not None:
                        pending_rows.append(_row(job, row, run_id, self.settings))
                    bar.update(1)
                    nxt = next(queue, None)
                    if nxt is not None:
                        running[pool.submit(self._one, client, state, nxt, limits)] = nxt
                if pending_rows and (len(pending_rows) >= FLUSH_ROWS or time.monotonic() - last_flush >= FLUSH_S):
                    _flush(store, pending_rows)
                    last_flush = time.monotonic()
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
            try:
                _flush(store, pending_rows)  # what was generated is kept, whatever stopped the run
            finally:
                client.close()

    def _one(self, client: ChatClient, state: "_RunState", job: _Job, limits: Limits) -> Completion | Exception:
        """Runs in a worker: the completion, or the exception that stopped it (never raises)."""
        if state.stopped(job.endpoint):
            return GenerationFailed("endpoint no longer called in this run")
        try:
            completion = client.complete(job.endpoint, job.sent, job.seed)
            try:  # the size limits of ingest ([ingest] max_chars, max_messages) hold for what is generated too
                check_messages([*job.context, {"role": "assistant", "content": completion.text}], limits)
            except Reject as exc:
                return GenerationFailed(f"the reply is not stored: {exc}")
            return completion
        except (GenerationFailed, Capped) as exc:
            return exc
        except Exception as exc:  # an unexpected fault fails this candidate, not the run
            return GenerationFailed(f"{type(exc).__name__}: {str(exc)[:160]}")

    def _messages(self, context: list[dict]) -> list[dict]:
        """What is sent: role and text of each message, tool calls and tool ids kept; texts and tool-call arguments
        PII-redacted unless `redact` is off."""
        redact = self.redactor.redact if self.settings.redact else (lambda text: text)
        out = []
        for message in context:
            sent: dict[str, Any] = {"role": message.get("role", "user"), "content": redact(content_text(message))}
            for key in ("tool_call_id", "name"):
                if message.get(key) is not None:
                    sent[key] = message[key]
            if isinstance(message.get("tool_calls"), list):
                sent["tool_calls"] = [_redact_call(call, redact) for call in message["tool_calls"]]
            out.append(sent)
        return out


class _RunState:
    """Counts, per-endpoint failure streaks and first errors; touched by the workers and the main thread."""

    def __init__(self, settings: GenerateSettings, budget: Budget):
        self.settings = settings
        self.budget = budget
        self.generated = self.failed = self.capped = 0
        self.streak: dict[str, int] = {}
        self.halted: set[str] = set()
        self.errors: dict[str, str] = {}
        self.lock = threading.Lock()

    def stopped(self, endpoint: Endpoint) -> bool:
        with self.lock:
            return endpoint.key in self.halted

    def record(self, job: _Job, outcome: Completion | Exception) -> Completion | None:
        key = job.endpoint.key
        with self.lock:
            if isinstance(outcome, Completion):
                self.generated += 1
                self.streak[key] = 0
                return outcome
            if isinstance(outcome, Capped):
                self.capped += 1
                return None
            self.failed += 1
            if key not in self.halted:
                self.errors.setdefault(key, str(outcome))
                self.streak[key] = self.streak.get(key, 0) + 1
                if getattr(outcome, "fatal", False) or self.streak[key] >= self.settings.stop_after:
                    self.halted.add(key)
                    self.errors[key] = f"{outcome}; stopped calling it"
            return None

    def summary(self) -> dict:
        with self.lock:
            return {"generated": self.generated, "failed": self.failed, "requests": self.budget.requests,
                    "tokens": self.budget.tokens, "capped": self.capped, "cap": self.budget.capped,
                    "errors": dict(self.errors)}


def _row(job: _Job, completion: Completion, run_id: str, settings: GenerateSettings) -> dict:
    now = utcnow()
    e = job.endpoint
    provenance = {"from": job.parent, "generator": e.key, "model": e.model, "endpoint": public_url(e.url),
                  "params": {"temperature": e.temperature, "max_tokens": e.max_tokens, "n": e.n}, "index": job.index,
                  "seed": job.seed, "redacted": settings.redact, "response_id": completion.response_id,
                  "finish_reason": completion.finish_reason, "usage": completion.usage, "tokens": completion.tokens}
    messages = [*job.context, {"role": "assistant", "content": completion.text}]
    return {"id": job.id, "messages": dumps(messages), "model": e.model[:200], "created_at": now, "session_id": None,
            "user_hash": None, "metadata": dumps({"generated": provenance}), "n_messages": len(messages),
            "source": SOURCE, "run_id": run_id, "ingested_at": now}


def _redact_call(call: Any, redact: Any) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": redact(function["arguments"])}}


def _flush(store: Store, rows: list[dict]) -> None:
    if rows:
        with store.begin() as conn:
            insert_rows(conn, conversations, rows)  # insert-or-ignore: an overlapping run's candidate stays
        rows.clear()


def _api_keys(endpoints: list[Endpoint]) -> dict[str, str | None]:
    """Endpoint key -> API key from the variable it names; a named variable that is unset is an error."""
    keys: dict[str, str | None] = {}
    for e in endpoints:
        keys[e.key] = os.environ.get(e.api_key_env) if e.api_key_env else None
        if e.api_key_env and not keys[e.key]:
            raise CurateError(f"generator {e.key} reads its API key from ${e.api_key_env}, which is not set; "
                              "export it, or remove api_key_env for an endpoint without a key")
    return keys


def _public_settings(settings: GenerateSettings) -> dict:
    data = asdict(settings)
    data["endpoints"] = [{**asdict(e), "url": public_url(e.url)} for e in settings.endpoints]
    return data


def last_reply(messages: list[dict]) -> int | None:
    """Index of the last assistant message (the reply a candidate is an alternative to), or None."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"), None)


def generate(store: Store, ids: Sequence[str] | None = None, budget: int | None = None, *, dataset: str | None = None,
             strategy: Any = None, settings: GenerateSettings | None = None, progress: bool | None = None) -> dict:
    """`curate generate`: candidates for `ids`, or for the `budget` conversations that a push into `dataset` would
    route next (without a dataset: among conversations not routed anywhere). Conversations that already have a
    production sibling are left out, as push pairs them with it. Returns `Generator.generate`'s summary plus
    "with_sibling"."""
    from annotations.push import _choose, known_ids, pair_siblings  # the same choice and pairing a push would make
    from annotations.routing import Pick, get_strategy

    if (budget is None) == (ids is None):
        raise CurateError("say what to generate for: --budget N (routing chooses) or --ids ID... (exactly these)")
    if budget is not None and budget < 0:
        raise CurateError("--budget must be 0 or more")
    generator = Generator(settings or GenerateSettings.resolve(store.home))
    target = dataset or ""  # no dataset has an empty name: every routed conversation is "elsewhere"
    if ids is None:
        picks, _ = _choose(store, target, budget, None, get_strategy(strategy))
    else:  # exactly these, routed or not
        picks = [Pick(i, 0.0, "ids") for i in known_ids(store, ids)]
    paired = pair_siblings(store, target, picks, generated=False)
    lonely = [p.conversation_id for p in paired if p.conversation_id_b is None]
    result = generator.generate(store, lonely, progress=progress)
    return {**result, "with_sibling": len(paired) - len(lonely)}
