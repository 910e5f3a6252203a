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
import threading
from dataclasses import asdict, dataclass
from typing import Any, Sequence


from annotations.generate.config import Endpoint, GenerateSettings, public_url
from annotations.pii import Redactor
from curation.config import IngestSettings
from curation.endpoints import Budget, Capped, ChatClient, Completion, EndpointError, RunState, api_keys, run_batched
from curation.errors import CurateError
from curation.ingest.records import Limits, Reject, check_messages
from curation.messages import content_text, last_reply_index
from curation.store import Store, dumps, existing_ids, insert_rows, loads, stored_messages, utcnow
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
        keys = api_keys(settings.endpoints, "generator")
        state = RunState(settings.stop_after, Budget(settings.max_requests, settings.max_total_tokens))
        with store.run("generate", {"conversations": len(conversation_ids),
                                    "endpoints": [e.key for e in settings.endpoints],
                                    "settings": _public_settings(settings)}) as run:
            run.progress = lambda: state.summary("generated")
            jobs, wanted, existing, skipped = self._jobs(store, conversation_ids)
            ingest = IngestSettings.resolve(store.home)  # a candidate must be one that ingest would store
            self._run(store, jobs, state, run.id, keys, Limits(ingest.max_messages, ingest.max_chars), progress)
            result = {"conversations": wanted, **state.summary("generated"), "existing": existing, "skipped": skipped,
                      "run_id": run.id}
            result["status"] = "partial" if result["failed"] or result["capped"] else "done"
            return run.finish(result, result["status"])

    def _jobs(self, store: Store, ids: Sequence[str]) -> tuple[list[_Job], int, int, int]:
        """The candidates still missing; also how many conversations want some, how many candidates exist, and how
        many conversations have no reply to generate an alternative to."""
        ids = list(dict.fromkeys(ids))
        rows: dict[str, Any] = {}
        with store.connect() as conn:
            rows.update(stored_messages(conn, ids))
        planned: list[_Job] = []
        wanted = skipped = 0
        for parent in ids:
            messages = loads(rows.get(parent)) or []
            last = last_reply_index(messages)
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

    def _run(self, store: Store, jobs: list[_Job], state: RunState, run_id: str, keys: dict[str, str | None],
             limits: Limits, progress: bool | None) -> None:
        if not jobs:
            return
        stop = threading.Event()
        client = ChatClient(self.settings, state.budget, stop, keys)

        def keep(job: _Job, outcome: Completion | Exception) -> dict | None:
            completion = state.record(job.endpoint.key, outcome)
            return None if completion is None else _row(job, completion, run_id, self.settings)

        try:
            run_batched(jobs, lambda job: self._one(client, state, job, limits), keep, lambda rows: _flush(store, rows),
                        self.settings.concurrency, flush_rows=FLUSH_ROWS, flush_s=FLUSH_S, name="generate",
                        unit="cand", progress=progress)
        finally:
            stop.set()
            client.close()

    def _one(self, client: ChatClient, state: RunState, job: _Job, limits: Limits) -> Completion | Exception:
        """Runs in a worker: the completion, or the exception that stopped it (never raises)."""
        if state.stopped(job.endpoint.key):
            return EndpointError("endpoint no longer called in this run")
        try:
            completion = client.complete(job.endpoint, job.sent, job.seed)
            try:  # the size limits of ingest ([ingest] max_chars, max_messages) hold for what is generated too
                check_messages([*job.context, {"role": "assistant", "content": completion.text}], limits)
            except Reject as exc:
                return EndpointError(f"the reply is not stored: {exc}")
            return completion
        except (EndpointError, Capped) as exc:
            return exc
        except Exception as exc:  # an unexpected fault fails this candidate, not the run
            return EndpointError(f"{type(exc).__name__}: {str(exc)[:160]}")

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


def _public_settings(settings: GenerateSettings) -> dict:
    data = asdict(settings)
    data["endpoints"] = [{**asdict(e), "url": public_url(e.url)} for e in settings.endpoints]
    return data


def generate(store: Store, ids: Sequence[str] | None = None, budget: int | None = None, *, dataset: str | None = None,
             strategy: Any = None, settings: GenerateSettings | None = None, progress: bool | None = None) -> dict:
    """`curate generate`: candidates for `ids`, or for the `budget` conversations that a push into `dataset` would
    route next (without a dataset: among conversations not routed anywhere). Conversations that already have a
    production sibling are left out, as push pairs them with it. Returns `Generator.generate`'s summary plus
    "with_sibling"."""
    from annotations.pairing import pair_siblings  # the same choice and pairing a push would make
    from annotations.routing import Pick, choose, known_ids, routing_strategy

    if (budget is None) == (ids is None):
        raise CurateError("say what to generate for: --budget N (routing chooses) or --ids ID... (exactly these)")
    if budget is not None and budget < 0:
        raise CurateError("--budget must be 0 or more")
    generator = Generator(settings or GenerateSettings.resolve(store.home))
    target = dataset or ""  # no dataset has an empty name: every routed conversation is "elsewhere"
    if ids is None:
        picks, _ = choose(store, target, budget, None, routing_strategy(store, strategy))
    else:  # exactly these, routed or not
        picks = [Pick(i, 0.0, "ids") for i in known_ids(store, ids)]
    paired = pair_siblings(store, target, picks, generated=False)
    lonely = [p.conversation_id for p in paired if p.conversation_id_b is None]
    result = generator.generate(store, lonely, progress=progress)
    return {**result, "with_sibling": len(paired) - len(lonely)}
