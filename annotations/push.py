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

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import sqlalchemy as sa
from tqdm import tqdm

from annotations.client import AnnotationError, Connection, connect, map_error
from annotations.pii import Redactor
from annotations.pairing import pair_siblings
from annotations.record_builder import RecordBuilder, record_id
from annotations.suggestions import Suggestions
from annotations.routing import Pick, Strategy, choose, routing_strategy
from annotations.tables import annotation_records
from annotations.template import build_settings, differences, template
from curation.errors import CurateError
from curation.store import Store, insert_rows, loads, utcnow
from curation.store.tables import runs

BATCH = 250  # records per bulk request (the server accepts up to 500); smaller batches lose less to a crash
DEFAULT_WORKSPACE = "argilla"  # the embedded server's workspace, which annotators join by default
# RFC 7240: push reads nothing from the bulk answer; the embedded server then skips serialising whole records
# (a stock Argilla ignores the header and answers in full)
MINIMAL = {"Prefer": "return=minimal"}


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
    suggestions: str = "judge",
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
    its champion); by default the newest version that wrote attributes. `suggestions` ("judge", "reward", "none"):
    where suggestions come from (annotations.suggestions); "judge" prefers the LLM judge's values, else the reward model's.
    With `pairs` and a `generator`, chosen conversations without a sibling get a generated one first; the result
    then also holds "generated", "generation_failed" and the generator's summary as "generation". `ab_seed` (stored
    in the run) randomises which response of a record with a generated B is shown first. `run_params` are recorded
    with the push's run too (the loop names its own run there, to count its own pushes).
    """
    if (budget is None) == (ids is None):
        raise CurateError("say what to push: --budget N (routing chooses) or --ids ID... (exactly these)")
    if budget is not None and budget < 0:
        raise CurateError("--budget must be 0 or more")
    strategy = routing_strategy(store, strategy) if ids is None else None
    command = {"budget": budget, "strategy": getattr(strategy, "name", "ids"), "pairs": pairs}
    owed = _owed(store, dataset, command) if budget is not None and resume else budget
    generation = None
    try:
        with store.run("push", {"dataset": dataset, "ids": len(ids or []), **command, "owed": owed,
                                **({"ab_seed": ab_seed} if pairs else {}), **(run_params or {})}) as run:
            picks, skipped = choose(store, dataset, owed, ids, strategy)
            if pairs:
                picks = pair_siblings(store, dataset, picks)
                if generator is not None:
                    generation = generator.generate(store, [p.conversation_id for p in picks
                                                            if p.conversation_id_b is None], progress=progress)
                    picks = pair_siblings(store, dataset, picks)
            space, dim = _vector_space(store)
            settings = template(min_submitted=min_submitted, dimensions=dim)
            conn = connection or connect(home=store.home)
            dataset_id, question_ids = ensure_dataset(conn, dataset, workspace or DEFAULT_WORKSPACE, settings)
            builder = RecordBuilder(store, redactor or Redactor(), question_ids, space,
                                    Suggestions(store, question_ids, suggestions, suggestions_from), ab_seed)
            pushed, unrateable = _send(store, conn, dataset, dataset_id, picks, builder, batch_size, run.id, progress)
            by_strategy: dict[str, int] = {}
            for pick in picks:
                by_strategy[pick.strategy] = by_strategy.get(pick.strategy, 0) + 1
            result = {"pushed": pushed, "skipped": skipped + unrateable, "dataset": dataset, "url": conn.url,
                      "by_strategy": by_strategy, "run_id": run.id,
                      "generated": generation["generated"] if generation else 0,
                      "generation_failed": generation["failed"] + generation["capped"] if generation else 0}
            if generation is not None:
                result["generation"] = generation
            return run.finish(result)
    except Exception as exc:  # recorded as failed by store.run; its committed batches stay
        if isinstance(exc, CurateError):
            raise
        raise map_error(exc, getattr(connection, "url", "ARGILLA_API_URL")) from exc


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


def _send(store: Store, conn: Connection, dataset: str, dataset_id: str, picks: list[Pick], builder: RecordBuilder,
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


