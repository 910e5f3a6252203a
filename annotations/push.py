"""Push: route conversations into an Argilla dataset as HelpSteer2 rating tasks.

Nothing leaves the store unredacted: every text goes through `annotations.pii` first. The Argilla record's
`external_id` is `record_id(conversation_id)`, upserted in bulk, and a batch is recorded in `annotation_records`
only after the server acknowledged it, so a push cut off anywhere resumes with the same command and never
duplicates (the server also keeps external ids unique per dataset).

`--budget N` pushes N new records: the strategy chooses among conversations not in the dataset yet, so a second
push adds N more. A rerun after a push that failed or was cut off sends only what that push still owed. `--ids`
routes exactly the conversations named.

With `pairs`, a `generator` (`annotations.generate.Generator`) first writes a candidate reply for each chosen
conversation that has no sibling; the candidate becomes response B. Such records show their two responses in a
random order per record (`annotations.order`), so annotators cannot tell which one production wrote.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import orjson
import sqlalchemy as sa
from tqdm import tqdm

from annotations.client import AnnotationError, Connection, connect, map_error
from annotations.order import shown_swapped
from annotations.pii import Redactor
from annotations.routing import Pick, Strategy, cluster_labels, get_strategy, load_candidates
from annotations.tables import annotation_records
from annotations.template import ATTRIBUTES, VECTOR, build_settings, differences, template
from curation.config import load_config_file
from curation.errors import CurateError
from curation.messages import content_text
from curation.store import Store, existing_ids, insert_rows, loads, utcnow
from curation.store.failure_tables import cluster_assignments, failure_scores, rewards
from curation.store.tables import GENERATED, conversations, runs

BATCH = 250  # records per bulk request (the server accepts up to 500); smaller batches lose less to a crash
DEFAULT_WORKSPACE = "argilla"  # the embedded server's workspace, which annotators join by default
# RFC 7240: push reads nothing from the bulk answer; the embedded server then skips serialising whole records
# (a stock Argilla ignores the header and answers in full)
MINIMAL = {"Prefer": "return=minimal"}
_AGENT_UNSAFE = re.compile(r"[^a-zA-Z0-9\-_:./ ]")


def record_id(conversation_id: str, conversation_id_b: str | None = None) -> str:
    """The Argilla external id of a record: the conversation id, or both ids for a two-response record."""
    return conversation_id if conversation_id_b is None else f"{conversation_id}|{conversation_id_b}"


def push(
    store: Store,
    dataset: str,
    budget: int | None = None,
    ids: Sequence[str] | None = None,
    strategy: str | Strategy | None = None,
    *,
    workspace: str | None = None,
    min_submitted: int = 1,
    connection: Connection | None = None,
    redactor: Redactor | None = None,
    batch_size: int = BATCH,
    pairs: bool = False,
    suggestions_from: str | None = None,
    progress: bool | None = None,
    resume: bool = True,
    generator: Any = None,
    ab_seed: int = 0,
    run_params: dict | None = None,
) -> dict:
    """Route conversations into `dataset`; returns {"pushed", "skipped", "dataset", "url", "by_strategy", "run_id"}.

    `budget` counts new records: conversations already in the dataset (or a pair's second response anywhere) are
    not candidates. With `resume`, when the newest push into `dataset` had the same budget, strategy and `pairs`
    and did not finish, this one sends only what that push still owed. `skipped` counts chosen conversations that
    could not be sent: without an assistant reply, or for `ids`, already in the dataset or routed elsewhere.
    With `pairs`, a chosen conversation that has a sibling (another reply to the same context, e.g. a regenerated
    answer) becomes a two-response record with a preference question.
    `suggestions_from` names the reward model version whose `rewards.attributes` become suggestions (the loop passes
    its champion); by default the newest version that wrote attributes.
    With `pairs` and a `generator`, chosen conversations without a sibling get a generated one first; the result
    then also holds "generated", "generation_failed" and the generator's summary as "generation". `ab_seed` (stored
    in the run) randomises which response of a record with a generated B is shown first. `run_params` are recorded
    with the push's run too (the loop names its own run there, to count its own pushes).
    """
    if (budget is None) == (ids is None):
        raise CurateError("say what to push: --budget N (routing chooses) or --ids ID... (exactly these)")
    if budget is not None and budget < 0:
        raise CurateError("--budget must be 0 or more")
    strategy = get_strategy(strategy, load_config_file(store.home).get("routing")) if ids is None else None
    command = {"budget": budget, "strategy": getattr(strategy, "name", "ids"), "pairs": pairs}
    owed = _owed(store, dataset, command) if budget is not None and resume else budget
    run_id = store.start_run("push", {"dataset": dataset, "ids": len(ids or []), **command, "owed": owed,
                                      **({"ab_seed": ab_seed} if pairs else {}), **(run_params or {})})
    generation = None
    try:
        picks, skipped = _choose(store, dataset, owed, ids, strategy)
        if pairs:
            picks = pair_siblings(store, dataset, picks)
            if generator is not None:
                generation = generator.generate(store, [p.conversation_id for p in picks if p.conversation_id_b is None],
                                                progress=progress)
                picks = pair_siblings(store, dataset, picks)
        space, dim = _vector_space(store)
        settings = template(min_submitted=min_submitted, dimensions=dim)
        conn = connection or connect(home=store.home)
        dataset_id, question_ids = ensure_dataset(conn, dataset, workspace or DEFAULT_WORKSPACE, settings)
        builder = _RecordBuilder(store, redactor or Redactor(), question_ids, space, suggestions_from, ab_seed)
        pushed, unrateable = _send(store, conn, dataset, dataset_id, picks, builder, batch_size, run_id, progress)
    except BaseException as exc:  # a failed or interrupted run is recorded as failed; its committed batches stay
        store.finish_run(run_id, "failed", {"error": str(exc)[:500] or type(exc).__name__})
        if isinstance(exc, CurateError) or not isinstance(exc, Exception):
            raise
        raise map_error(exc, getattr(connection, "url", "ARGILLA_API_URL")) from exc
    by_strategy: dict[str, int] = {}
    for pick in picks:
        by_strategy[pick.strategy] = by_strategy.get(pick.strategy, 0) + 1
    result = {"pushed": pushed, "skipped": skipped + unrateable, "dataset": dataset, "url": conn.url,
              "by_strategy": by_strategy, "run_id": run_id,
              "generated": generation["generated"] if generation else 0,
              "generation_failed": generation["failed"] + generation["capped"] if generation else 0}
    if generation is not None:
        result["generation"] = generation
    store.finish_run(run_id, "done", result)
    return result


def known_ids(store: Store, ids: Sequence[str]) -> list[str]:
    """`ids` in order without repeats; a CurateError naming the first one the store does not hold."""
    wanted = list(dict.fromkeys(ids))
    with store.connect() as conn:
        known = existing_ids(conn, conversations.c.id, wanted)
    missing = [i for i in wanted if i not in known]
    if missing:
        raise CurateError(f"{len(missing)} of the --ids are not in the store (first: {missing[0]!r}); ingest them first")
    return wanted


def _choose(store: Store, dataset: str, budget: int | None, ids: Sequence[str] | None,
            strategy: Strategy | None) -> tuple[list[Pick], int]:
    """The picks still to send, and how many chosen ones were skipped."""
    with store.connect() as conn:
        in_dataset = set(conn.execute(
            sa.select(annotation_records.c.conversation_id).where(annotation_records.c.dataset == dataset)
        ).scalars())
        # a second response (B) of any pair is not routed again on its own
        taken = in_dataset | set(conn.execute(
            sa.select(annotation_records.c.conversation_id_b).where(annotation_records.c.conversation_id_b.is_not(None))
        ).scalars())
    if ids is not None:
        wanted = known_ids(store, ids)
        routable = set(load_candidates(store, dataset).ids)
        picks = [Pick(i, 0.0, "ids") for i in wanted if i in routable and i not in taken]
        return picks, len(wanted) - len(picks)
    return strategy.select(load_candidates(store, dataset).without(taken), budget), 0


def _owed(store: Store, dataset: str, command: dict) -> int:
    """What a push of `command` into `dataset` should send: its budget, or what the newest push into the dataset
    still owed when that push was the same command and did not finish (failed, or killed while running)."""
    budget = command["budget"]
    with store.connect() as conn:
        recent = conn.execute(sa.select(runs.c.id, runs.c.status, runs.c.params).where(runs.c.kind == "push")
                              .order_by(runs.c.started_at.desc()).limit(200)).all()
        for run_id, status, params in recent:
            params = loads(params) or {}
            if params.get("dataset") != dataset:
                continue
            if status == "done" or {k: params.get(k) for k in command} != command or params.get("owed") is None:
                return budget
            sent = conn.execute(sa.select(sa.func.count()).select_from(annotation_records)
                                .where(annotation_records.c.run_id == run_id)).scalar_one()
            return max(0, params["owed"] - sent)
    return budget


def _vector_space(store: Store) -> tuple[str | None, int | None]:
    """The newest embedding space and its size, or (None, None) before `curate embed` ran."""
    try:
        from curation.embed import spaces
    except ImportError:  # the embed stage is optional for routing
        return None, None
    found = spaces(store)
    return (found[0]["name"], int(found[0]["dim"])) if found else (None, None)


def ensure_dataset(conn: Connection, name: str, workspace: str, settings: dict) -> tuple[str, dict[str, str]]:
    """Create the workspace and dataset if needed; refuse a dataset whose settings differ. Returns (id, question ids)."""
    import argilla as rg

    client = conn.client
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK warns "not found" before returning None, which is expected here
            if client.workspaces(workspace) is None:
                rg.Workspace(name=workspace, client=client).create()
            found = client.datasets(name=name, workspace=workspace)
        if found is None:
            found = rg.Dataset(name=name, workspace=workspace, settings=build_settings(settings), client=client).create()
        else:
            differ = differences(settings, found.settings.serialize())
            if differ:
                raise AnnotationError(
                    f"dataset {name!r} in workspace {workspace!r} at {conn.url} has different settings: "
                    f"{'; '.join(differ)}. Push into a new --dataset, or delete that dataset first"
                )
        return str(found.id), {q.name: str(q.id) for q in found.settings.questions}
    except AnnotationError:
        raise
    except Exception as exc:  # SDK errors are mapped once, here
        raise map_error(exc, conn.url) from exc


def _send(store: Store, conn: Connection, dataset: str, dataset_id: str, picks: list[Pick], builder: "_RecordBuilder",
          batch_size: int, run_id: str, progress: bool | None) -> tuple[int, int]:
    """Build batch i+1 while the server stores batch i; record each batch once the server acknowledged it."""
    pushed = unrateable = 0
    path = f"/api/v1/datasets/{dataset_id}/records/bulk"
    batches = [picks[i : i + batch_size] for i in range(0, len(picks), batch_size)]
    with tqdm(total=len(picks), unit="rec", desc=f"push {dataset}", disable=None if progress is None else not progress) as bar, \
            ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in [*batches, None]:
            built = builder.build(batch) if batch is not None else None
            if pending is not None:
                future, sent = pending
                future.result()
                _record(store, dataset, sent, run_id)
                pushed += len(sent)
                bar.update(len(sent))
            pending = None
            if built is not None:
                items, sent = built
                unrateable += len(batch) - len(sent)
                if items:
                    pending = (pool.submit(conn.request, "PUT", path, json={"items": items}, headers=MINIMAL), sent)
    return pushed, unrateable


def _record(store: Store, dataset: str, sent: list[Pick], run_id: str) -> None:
    now = utcnow()
    rows = [
        {"record_id": record_id(p.conversation_id, p.conversation_id_b), "dataset": dataset,
         "conversation_id": p.conversation_id, "conversation_id_b": p.conversation_id_b, "priority": p.priority, "strategy": p.strategy, "pushed_at": now, "run_id": run_id}
        for p in sent
    ]
    with store.begin() as conn:
        insert_rows(conn, annotation_records, rows)


class _RecordBuilder:
    """Turns picks into Argilla record payloads (plain dicts; the SDK's objects cost more than the server's work)."""

    def __init__(self, store: Store, redactor: Redactor, question_ids: dict[str, str], space: str | None,
                 model_version: str | None = None, ab_seed: int = 0):
        self.store = store
        self.ab_seed = ab_seed
        self.redactor = redactor
        self.question_ids = question_ids
        self.space = space
        self.labels = cluster_labels(store)
        self.model_version = model_version or _suggestion_model(store)
        self.agent = _AGENT_UNSAFE.sub("-", self.model_version)[:200] if self.model_version else None

    def build(self, picks: list[Pick]) -> tuple[list[dict], list[Pick]]:
        ids = [p.conversation_id for p in picks] + [p.conversation_id_b for p in picks if p.conversation_id_b]
        rows = self._rows(ids)
        vectors = self._vectors(ids)
        items, sent = [], []
        for pick in picks:
            row = rows.get(pick.conversation_id)
            row_b = rows.get(pick.conversation_id_b) if pick.conversation_id_b else None
            item = self._item(pick, row, row_b, vectors.get(pick.conversation_id)) if row is not None else None
            if item is not None:
                items.append(item)
                sent.append(pick)
        return items, sent

    def _rows(self, ids: list[str]) -> dict[str, Any]:
        c, f, a = conversations.c, failure_scores.c, cluster_assignments.c
        query = (
            sa.select(c.id, c.messages, c.model, c.created_at, c.source, f.failure_score, f.signals, a.cluster_id)
            .select_from(conversations.outerjoin(failure_scores, f.conversation_id == c.id)
                         .outerjoin(cluster_assignments, a.conversation_id == c.id))
            .where(c.id.in_(ids))
        )
        found: dict[str, Any] = {}
        with self.store.connect() as conn:
            found.update((r.id, r) for r in conn.execute(query))
            if self.model_version is not None:
                found_rewards = dict(conn.execute(
                    sa.select(rewards.c.conversation_id, rewards.c.attributes)
                    .where(rewards.c.model_version == self.model_version, rewards.c.conversation_id.in_(ids))
                ).all())
            else:
                found_rewards = {}
        self.rewards = found_rewards
        return found

    def _vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        if self.space is None:
            return {}
        from curation.embed import load_vectors

        found, matrix = load_vectors(self.store, self.space, ids)
        return dict(zip(found, matrix))

    def _item(self, pick: Pick, row: Any, row_b: Any, vector: np.ndarray | None) -> dict | None:
        messages = loads(row.messages) or []
        last = _last_assistant(messages)
        if last is None:
            return None
        redact = self.redactor.redact
        context = [{"role": str(m.get("role", "user")), "content": redact(content_text(m)) or " "} for m in messages[:last]]
        fields = {"conversation": context, "response": redact(content_text(messages[last])) or "(empty response)"}
        external_id = record_id(pick.conversation_id, pick.conversation_id_b)
        generated_b = row_b is not None and row_b.source == GENERATED
        shown_a = pick.conversation_id
        if row_b is not None:
            messages_b = loads(row_b.messages) or []
            last_b = _last_assistant(messages_b)
            fields["response_b"] = redact(content_text(messages_b[last_b])) if last_b is not None else "(no response)"
            if generated_b and shown_swapped(external_id, self.ab_seed):
                fields["response"], fields["response_b"] = fields["response_b"], fields["response"]
                shown_a = pick.conversation_id_b
        item: dict[str, Any] = {
            "external_id": external_id,
            "fields": fields,
            "metadata": self._metadata(pick, row, hide_origin=generated_b),
        }
        if vector is not None:
            item["vectors"] = {VECTOR: vector}
        suggestions = self._suggestions(shown_a)
        if suggestions:
            item["suggestions"] = suggestions
        return item

    def _metadata(self, pick: Pick, row: Any, hide_origin: bool = False) -> dict:
        """The record's metadata; with `hide_origin` (B is generated), nothing that tells the production reply apart."""
        meta: dict[str, Any] = {"strategy": pick.strategy}
        if row.failure_score is not None:
            meta["failure_score"] = min(1.0, max(0.0, float(row.failure_score)))
        if row.cluster_id is not None:
            meta["cluster_id"] = int(row.cluster_id)
            if self.labels.get(row.cluster_id):
                meta["cluster_label"] = self.labels[row.cluster_id][:200]
        if row.created_at:
            meta["date"] = row.created_at[:10]
        if hide_origin:  # the production reply's signals and model name would say which response it is
            return meta
        fired = [s["name"] for s in (loads(row.signals) or []) if _fired(s)]
        if fired:
            meta["signals"] = fired
        if row.model:
            meta["model"] = row.model[:200]
        return meta

    def _suggestions(self, conversation_id: str) -> list[dict]:
        attributes = loads(self.rewards.get(conversation_id)) if self.rewards else None
        if not isinstance(attributes, dict):
            return []
        out = []
        for name in ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, (int, float)) and name in self.question_ids and np.isfinite(value):
                out.append({"question_id": self.question_ids[name], "value": int(min(4, max(0, round(value)))),
                            "agent": self.agent})
        return out


def _last_assistant(messages: list[dict]) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"), None)


def context_key(messages: list[dict]) -> str | None:
    """What two replies to the same context share: a hash of every message before the last assistant one."""
    last = _last_assistant(messages)
    if last is None:
        return None
    return hashlib.sha1(orjson.dumps([(m.get("role"), content_text(m)) for m in messages[:last]])).hexdigest()


def pair_siblings(store: Store, dataset: str, picks: list[Pick], generated: bool = True) -> list[Pick]:
    """Give each pick a sibling reply (same context, not routed anywhere, not picked) as its response B, if it has one.

    A production sibling comes before a generated candidate (those count only with `generated`); among them the
    smallest id is taken, so the pairing is the same on every run.
    """
    with store.connect() as conn:
        routed = set(conn.execute(sa.select(annotation_records.c.conversation_id)
                                  .where(annotation_records.c.dataset == dataset)).scalars())
    candidates = [c for c in load_candidates(store, dataset, generated=generated).ids if c not in routed]  # a B is never rated already
    picked = {p.conversation_id for p in picks}
    by_context: dict[str, list[tuple[bool, str]]] = {}
    key_of: dict[str, str] = {}
    with store.connect() as conn:
        for start in range(0, len(candidates), 5_000):
            chunk = candidates[start : start + 5_000]
            for cid, messages, source in conn.execute(sa.select(conversations.c.id, conversations.c.messages,
                                                                conversations.c.source)
                                                      .where(conversations.c.id.in_(chunk))):
                key = context_key(loads(messages) or [])
                if key is not None:
                    key_of[cid] = key
                    by_context.setdefault(key, []).append((source == GENERATED, cid))
    used: set[str] = set()
    out = []
    for pick in picks:
        siblings = [c for _, c in sorted(by_context.get(key_of.get(pick.conversation_id, ""), []))
                    if c not in picked and c not in used]
        if siblings:
            used.add(siblings[0])
            pick = Pick(pick.conversation_id, pick.priority, pick.strategy, siblings[0])
        out.append(pick)
    return out


def _fired(signal: Any) -> bool:
    return isinstance(signal, dict) and bool(signal.get("name")) and (signal.get("value") or 0) > 0


def _suggestion_model(store: Store) -> str | None:
    """The reward model whose attribute predictions become suggestions: the newest version that wrote rewards."""
    with store.connect() as conn:
        return conn.execute(
            sa.select(rewards.c.model_version).where(rewards.c.attributes.is_not(None))
            .order_by(rewards.c.scored_at.desc()).limit(1)
        ).scalar()

