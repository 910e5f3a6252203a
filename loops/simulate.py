"""Simulated annotators (`curate demo`, `curate annotate simulate`): seeded, noisy, and clearly not people.

They rate through the real Argilla API exactly as the web UI does (each with its own user and API key, one
response per record), answering from the failure mode planted in the sample traffic (`metadata.demo_truth`); a
conversation without one is rated as a good answer. Each record is rated by `per_record` of them, chosen by a hash
of the record, so their agreement can be measured.

Their ratings can never pass for people's: the users are named `simulated-annotator-N` (first name "Simulated"), so
the store's responses and consensus rows carry those names; every session is a `simulate` run in the store that
records the users' Argilla ids too (what pull stores as the name when its key cannot list users); and exports mark
each pair or row that rests on one of them `simulated: true` and count them (`is_simulated`, `simulated_annotators`).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from annotations.order import swapped_records
from curation.errors import CurateError
from curation.store import Store, loads
from curation.store.tables import conversations, runs

PREFIX = "simulated-annotator-"

# the mean score each attribute gets for each planted failure of the rated answer (None = a good answer)
MEANS = {
    None: dict(helpfulness=3.5, correctness=3.7, coherence=3.7, complexity=1.5, verbosity=2.0),
    "wrong_arithmetic": dict(helpfulness=0.8, correctness=0.2, coherence=3.2, complexity=1.0, verbosity=1.8),
    "broken_code": dict(helpfulness=0.8, correctness=0.5, coherence=2.0, complexity=2.0, verbosity=2.0),
    "refusal": dict(helpfulness=0.2, correctness=2.0, coherence=3.0, complexity=0.3, verbosity=0.5),
    "truncated": dict(helpfulness=1.0, correctness=1.8, coherence=1.2, complexity=1.0, verbosity=0.6),
    "off_topic": dict(helpfulness=0.2, correctness=1.0, coherence=1.5, complexity=1.0, verbosity=2.0),
    "ignored_instruction": dict(helpfulness=1.2, correctness=2.5, coherence=3.0, complexity=1.0, verbosity=4.0),
}


@dataclass
class SimulatedAnnotator:
    name: str
    seed: int
    noise: float = 0.6  # standard deviation of each score before rounding
    rewrite_rate: float = 0.6  # how often it writes a better response for a failed answer

    def rate(self, record_key: str, failure: str | None, reference: str, failure_b: str | None = None,
             has_b: bool = False) -> dict:
        """Answers for response A (and, with a response B, a preference: the failed one loses)."""
        rng = random.Random(f"{self.seed}:{self.name}:{record_key}")
        values = {q: {"value": int(min(4, max(0, round(m + rng.gauss(0, self.noise)))))} for q, m in MEANS.get(failure, MEANS[None]).items()}
        if failure and reference and rng.random() < self.rewrite_rate:
            values["rewrite"] = {"value": reference}
        if has_b:
            gap = MEANS.get(failure_b, MEANS[None])["helpfulness"] - MEANS.get(failure, MEANS[None])["helpfulness"]
            strength = int(min(3, max(-3, round(gap + rng.gauss(0, self.noise)))))
            values["preference"] = {"value": str(strength)}
            values["justification"] = {"value": "simulated: the planted failure decides"}
        return values


def simulate(store: Store, api_url: str, api_key: str, dataset: str, workspace: str, n_annotators: int = 3,
             per_record: int = 2, seed: int = 0) -> dict:
    """Have `n_annotators` simulated annotators rate every record of `dataset`.

    Returns {"responses", "records", "without_truth" (records whose conversations carry no planted failure),
    "annotators", "simulated": True, "dataset", "workspace", "run_id"}. Idempotent: answers are upserts of the same
    seeded values. Recorded as a `simulate` run.
    """
    try:
        with store.run("simulate", {"dataset": dataset, "workspace": workspace, "annotators": n_annotators,
                                    "per_record": per_record, "seed": seed}) as run:
            result = _simulate(store, api_url, api_key, dataset, workspace, n_annotators, per_record, seed)
            summary = run.finish({**result, "dataset": dataset, "workspace": workspace, "run_id": run.id})
    except httpx.HTTPError as exc:
        raise CurateError(f"the Argilla server at {api_url} failed during simulation ({type(exc).__name__}: {exc}); "
                          "check that it runs (`curate annotate serve`) and run the same command again") from None
    summary.pop("user_ids")
    return summary


def is_simulated(annotator: str, known: set[str] = frozenset()) -> bool:
    """Whether an annotator name (as the store keeps it) is a simulated annotator's: by its name, or `known` ids."""
    return annotator.startswith(PREFIX) or annotator in known


def simulated_annotators(conn: sa.Connection) -> set[str]:
    """The Argilla user ids of every simulated annotator that rated for this store (from its `simulate` runs)."""
    found: set[str] = set()
    for (summary,) in conn.execute(sa.select(runs.c.summary).where(runs.c.kind == "simulate", runs.c.status == "done")):
        found.update((loads(summary) or {}).get("user_ids", []))
    return found


def _simulate(store: Store, api_url: str, api_key: str, dataset: str, workspace: str, n_annotators: int,
              per_record: int, seed: int) -> dict:
    owner = httpx.Client(base_url=api_url, headers={"X-Argilla-Api-Key": api_key}, timeout=60)
    ws = next((w for w in _get(owner, "/api/v1/me/workspaces")["items"] if w["name"] == workspace), None)
    ds = next((d for d in _get(owner, "/api/v1/me/datasets")["items"] if d["name"] == dataset and ws and d["workspace_id"] == ws["id"]), None)
    if ws is None or ds is None:
        raise CurateError(f"dataset {dataset!r} in workspace {workspace!r} not found on {api_url}; push first")
    annotators = [SimulatedAnnotator(f"{PREFIX}{i + 1}", seed + i) for i in range(n_annotators)]
    keys = {a.name: _ensure_user(owner, a.name, ws["id"]) for a in annotators}
    ids = {u["username"]: u["id"] for u in _get(owner, "/api/v1/users")["items"] if u["username"] in keys}
    truths = _truths(store)
    with store.connect() as conn:
        swapped = swapped_records(conn, dataset)  # they rate what is shown: B's reply first on these records
    work: dict[str, list[dict]] = {a.name: [] for a in annotators}
    records = without_truth = 0
    offset = 0
    while True:
        page = _get(owner, f"/api/v1/datasets/{ds['id']}/records", params={"offset": offset, "limit": 500})["items"]
        if not page:
            break
        offset += len(page)
        for record in page:
            key = record["external_id"]
            id_a, _, id_b = key.partition("|")
            records += 1
            without_truth += not truths.get(id_a)  # the routed conversation's
            if key in swapped:
                id_a, id_b = id_b, id_a
            truth, truth_b = truths.get(id_a, {}), truths.get(id_b, {})
            for annotator in _raters(annotators, key, per_record):
                values = annotator.rate(key, truth.get("last_answer_failure"), truth.get("reference", ""),
                                        truth_b.get("last_answer_failure"), has_b=bool(id_b))
                work[annotator.name].append({"record_id": record["id"], "values": values, "status": "submitted"})
    responses = 0
    for name, items in work.items():  # the bulk upsert the web UI uses: re-sending the same answers changes nothing
        client = httpx.Client(base_url=api_url, headers={"X-Argilla-Api-Key": keys[name]}, timeout=120)
        for start in range(0, len(items), 100):
            answer = client.post("/api/v1/me/responses/bulk", json={"items": items[start:start + 100]})
            if answer.status_code != 200:
                raise CurateError(f"simulated annotator {name}: {answer.status_code} {answer.text[:200]}")
            errors = [i["error"]["detail"] for i in answer.json()["items"] if i.get("error")]
            if errors:
                raise CurateError(f"simulated annotator {name}: {errors[0][:200]}")
            responses += len(items[start:start + 100])
    return {"responses": responses, "records": records, "without_truth": without_truth,
            "annotators": [a.name for a in annotators], "simulated": True,
            "user_ids": sorted(ids.values())}


def _raters(annotators: list[SimulatedAnnotator], key: str, per_record: int) -> list[SimulatedAnnotator]:
    start = int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(annotators)
    return [annotators[(start + i) % len(annotators)] for i in range(min(per_record, len(annotators)))]


def _truths(store: Store) -> dict[str, dict]:
    with store.connect() as conn:
        rows = conn.execute(sa.select(conversations.c.id, conversations.c.metadata)).all()
    return {cid: (loads(meta) or {}).get("demo_truth", {}) for cid, meta in rows if meta}


def _get(client: httpx.Client, path: str, params: dict | None = None) -> dict:
    response = client.get(path, params=params)
    if response.status_code != 200:
        raise CurateError(f"{client.base_url}{path}: {response.status_code} {response.text[:200]}")
    return response.json()


def _ensure_user(owner: httpx.Client, name: str, workspace_id: str) -> str:
    """Create the user (or find it) and give it the workspace; returns its API key."""
    users = {u["username"]: u for u in _get(owner, "/api/v1/users")["items"]}
    user = users.get(name)
    if user is None:
        created = owner.post("/api/v1/users", json={"username": name, "first_name": "Simulated", "last_name": name.split("-")[-1],
                                                     "role": "annotator", "password": f"simulated-{name}-pw"})
        if created.status_code != 201:
            raise CurateError(f"cannot create simulated annotator {name}: {created.status_code} {created.text[:200]}")
        user = created.json()
    members = {u["id"] for u in _get(owner, f"/api/v1/workspaces/{workspace_id}/users")["items"]}
    if user["id"] not in members:
        owner.post(f"/api/v1/workspaces/{workspace_id}/users", json={"user_id": user["id"]})
    return user["api_key"]
