"""A team of simulated annotators against the embedded Argilla server, over HTTP, doing what the web UI does.

    .venv/bin/python benchmarks/annotators.py [--annotators 20] [--records 10000] [--duration 120] [--kill-at S]

Setup: `--records` sample conversations with 384-d vectors, pushed by `curate annotate push` into a dataset with
`min_submitted` = 2, into `curate annotate serve` (argilla-server 2.8.0 with Curate's search engine). Each
annotator logs in and loops: fetch the next pending record (`POST /api/v1/me/datasets/{id}/records/search`, the
UI's pending filters, sometimes a metadata filter or a sort), then submit a response (`POST
/api/v1/records/{id}/responses`); sometimes it saves a draft first and submits it later (`PUT
/api/v1/responses/{id}`), sometimes it discards, and sometimes it searches (words, a filtered range, find similar).

Prints one JSON object: throughput, p50/p99 per endpoint, the server's RSS over time, and the checks against the
database and `curate annotate pull`: every acknowledged response is there once, none lost, none twice, and no
record was served to a third annotator after two submissions were acknowledged. `--kill-at S` kills the server
(SIGKILL) S seconds in and restarts it on the same home and port; the index is rebuilt from the database.
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from annotations.template import ATTRIBUTES

PENDING = [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
           {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]}]
BAND = {"type": "range", "scope": {"entity": "metadata", "metadata_property": "failure_score"}, "ge": 0.2, "le": 0.9}
BY_SCORE = [{"scope": {"entity": "metadata", "metadata_property": "failure_score"}, "order": "desc"}]
QUERY = "?include=responses&include=suggestions&offset=0&limit=1"


class Team:
    """What the annotators did: latencies per endpoint, the responses the server acknowledged, the fetches."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.acked: dict[tuple[str, str], tuple[str, float]] = {}  # (record, user) -> (status, acknowledged at)
        self.served: list[tuple[str, str, float]] = []  # (record, user, fetch started at)
        self.server_cpu_s = 0.0  # CPU the server used while the annotators ran: a figure a busy machine stretches less

    def timed(self, client: httpx.Client, name: str, method: str, path: str, **kwargs) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError:
            response = None
        elapsed = (time.perf_counter() - started) * 1000
        with self.lock:
            if response is not None and response.status_code < 300:
                self.latency[name].append(elapsed)
            else:
                self.errors[f"{name}:{'connection' if response is None else response.status_code}"] += 1
        return response if response is not None and response.status_code < 300 else None


def annotator(team: Team, url: str, token: str, user: str, dataset_id: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    search = f"/api/v1/me/datasets/{dataset_id}/records/search"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            roll = rng.random()
            if roll < 0.08:  # the search box, a metadata range, or "find similar"
                kind = rng.choice(["search_text", "search_filtered", "search_similar"])
                body = {"query": {}, "filters": {"and": PENDING + [BAND]}} if kind != "search_text" else {
                    "query": {"text": {"q": rng.choice(["python", "error code", "write a", "how"])}}}
                if kind == "search_similar":
                    body["query"] = {"vector": {"name": "conversation_embedding", "order": "most_similar",
                                                "value": np.random.default_rng(rng.randrange(1 << 30)).normal(size=384).tolist()}}
                team.timed(client, kind, "POST", search + QUERY.replace("limit=1", "limit=10"), json=body)
                continue
            body = {"query": {}, "filters": {"and": PENDING + ([BAND] if roll < 0.2 else [])}}
            if roll > 0.85:
                body["sort"] = BY_SCORE
            started = time.time()
            found = team.timed(client, "fetch", "POST", search + QUERY, json=body)
            if found is None:
                time.sleep(0.5)
                continue
            items = found.json()["items"]
            if not items and roll < 0.2:
                continue  # nothing left in the score band; the unfiltered queue may still hold records
            if not items:
                return  # nothing left for this annotator
            record = items[0]["record"]["id"]
            with team.lock:
                team.served.append((record, user, started))
            values = {a: {"value": rng.randrange(5)} for a in ATTRIBUTES}
            time.sleep(rng.uniform(0.05, 0.3))  # reading
            action = rng.random()
            if action < 0.05:
                status, path, method = "discarded", f"/api/v1/records/{record}/responses", "POST"
                done = team.timed(client, "discard", method, path, json={"values": values, "status": status})
            elif action < 0.15:
                draft = team.timed(client, "draft", "POST", f"/api/v1/records/{record}/responses",
                                   json={"values": values, "status": "draft"})
                if draft is None:
                    continue
                _ack(team, record, user, "draft")
                time.sleep(rng.uniform(0.05, 0.3))
                status = "submitted"
                done = team.timed(client, "submit_draft", "PUT", f"/api/v1/responses/{draft.json()['id']}",
                                  json={"values": values, "status": status})
            else:
                status = "submitted"
                done = team.timed(client, "submit", "POST", f"/api/v1/records/{record}/responses",
                                  json={"values": values, "status": status})
            if done is not None:
                _ack(team, record, user, status)


def _ack(team: Team, record: str, user: str, status: str) -> None:
    with team.lock:
        team.acked[(record, user)] = (status, time.time())


def percentiles(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    values = np.asarray(samples)
    return {"n": len(samples), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1), "max_ms": round(float(values.max()), 1)}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_team(url: str, owner_key: str, n: int, password: str) -> list[tuple[str, str]]:
    """n annotators in workspace argilla, created through the API as the owner; returns (user name, token)."""
    users = []
    with httpx.Client(base_url=url, headers={"X-Argilla-Api-Key": owner_key}, timeout=60) as owner:
        workspace = next(w for w in owner.get("/api/v1/me/workspaces").raise_for_status().json()["items"]
                         if w["name"] == "argilla")
        for i in range(n):
            name = f"annotator-{i:02d}"
            user = owner.post("/api/v1/users", json={"first_name": name, "username": name, "password": password,
                                                     "role": "annotator"}).raise_for_status().json()
            owner.post(f"/api/v1/workspaces/{workspace['id']}/users", json={"user_id": user["id"]}).raise_for_status()
            token = httpx.post(f"{url}/api/v1/token", data={"username": name, "password": password},
                               timeout=60).raise_for_status().json()["access_token"]
            users.append((name, token))
    return users


def setup(home: Path, records: int, annotators: int, port: int, api_key: str):
    """A Curate home with `records` conversations pushed into dataset `team` (min_submitted 2); returns the server."""
    from benchmarks.annotate_push_pull import prepare
    from annotations.client import connect
    from annotations.push import push
    from annotations.server import start_background
    from curation.store import Store

    store = Store.open(home)
    prepare(store, records)
    server = start_background(home, port=port, api_key=api_key, owner_password=secrets.token_hex(8))
    pushed = push(store, "team", budget=records, min_submitted=2, connection=connect(server.url, server.api_key),
                  progress=False)
    store.dispose()
    dataset_id = httpx.get(f"{server.url}/api/v1/me/datasets", headers={"X-Argilla-Api-Key": api_key},
                           timeout=60).json()["items"][0]["id"]
    return server, dataset_id, pushed["pushed"]


def run_team(server, dataset_id: str, users: list[tuple[str, str]], duration: float, kill_at: float | None = None,
             restart=None, rss_every: float = 5.0) -> tuple[Team, list, list]:
    """The annotators for `duration` seconds; returns (team, [(second, server RSS MB)], [restart events])."""
    team, stop, rss, events = Team(), threading.Event(), [], []
    threads = [threading.Thread(target=annotator, args=(team, server.url, token, name, dataset_id, stop, i), daemon=True)
               for i, (name, token) in enumerate(users)]
    started = time.monotonic()
    cpu_at_start = cpu_s(server.process.pid)
    for thread in threads:
        thread.start()
    current = server
    while time.monotonic() - started < duration and any(t.is_alive() for t in threads):
        time.sleep(min(rss_every, 1.0))
        elapsed = time.monotonic() - started
        if not rss or elapsed - rss[-1][0] >= rss_every:
            rss.append((round(elapsed, 1), rss_mb(current.process.pid)))
        if kill_at is not None and elapsed >= kill_at and not events:
            team.server_cpu_s += (cpu_s(current.process.pid) or 0.0) - (cpu_at_start or 0.0)
            cpu_at_start = 0.0
            current.kill()
            killed = time.monotonic()
            current = restart()
            events.append({"killed_at_s": round(elapsed, 1), "back_after_s": round(time.monotonic() - killed, 1)})
    stop.set()
    for thread in threads:
        thread.join(120)
    team.server_cpu_s += (cpu_s(current.process.pid) or 0.0) - (cpu_at_start or 0.0)
    return team, rss, events


def check(team: Team, db_path: Path, dataset_id: str, names: dict[str, str], pulled: dict | None = None) -> dict:
    """Every acknowledged response against argilla-server's database (and the Curate store after a pull)."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT r.id, p.user_id, p.status, r.external_id FROM responses p JOIN records r "
                          "ON r.id = p.record_id WHERE r.dataset_id = ?", (uuid.UUID(dataset_id).hex,)).fetchall()
    external = {str(uuid.UUID(record)): external_id for record, _, _, external_id in rows}
    stored = defaultdict(list)
    for record, user_id, status, _ in rows:
        stored[(str(uuid.UUID(record)), names.get(str(uuid.UUID(user_id)), user_id))].append(status)
    lost = [key for key, (status, _) in team.acked.items() if status not in stored.get(key, [])]
    twice = [key for key, statuses in stored.items() if len(statuses) > 1]
    submitted: dict[str, list[str]] = defaultdict(list)
    for (record, user), statuses in stored.items():
        if "submitted" in statuses:
            submitted[record].append(user)
    # A third annotator may race two others to a record; being *served* it once two submissions were acknowledged is
    # the fault: the queue must not hand out a completed record.
    acked_at = defaultdict(list)
    for (record, user), (status, at) in team.acked.items():
        if status == "submitted":
            acked_at[record].append((at, user))
    late = [(record, user) for record, user, fetched in team.served
            if len([at for at, other in acked_at[record] if other != user and at < fetched]) >= 2]
    over = [record for record, users in submitted.items() if len(users) > 2]
    started = min((at for _, _, at in team.served), default=0.0)
    timeline = {record: sorted([(round(at - started, 2), user, "served") for r, user, at in team.served if r == record]
                               + [(round(at - started, 2), user, "acked") for at, user in acked_at[record]])
                for record in over[:2]}
    out = {"acknowledged": len(team.acked), "acknowledged_submitted": sum(s == "submitted" for s, _ in team.acked.values()),
           "in_database": len(stored), "lost": len(lost), "duplicated": len(twice),
           "served_after_two_submitted": len(late),
           "records_over_min_submitted_by_race": len(over),
           "examples": {"lost": lost[:3], "late": late[:3], "over_min": timeline}}
    if pulled is not None:
        missing = [(record, user) for (record, user), (status, _) in team.acked.items()
                   if status == "submitted" and (external.get(record), user) not in pulled]
        out["pull"] = {"responses_in_store": len(pulled), "acknowledged_submitted_missing": len(missing)}
    return out


def pulled_responses(home: Path, api_key: str) -> dict:
    """`curate annotate pull --dataset team`, then the store's submitted responses by (record id, annotator)."""
    import sqlalchemy as sa

    from annotations.tables import rating_responses
    from curation.store import Store

    env = {**os.environ, "CURATE_HOME": str(home), "ARGILLA_API_KEY": api_key}
    env.pop("ARGILLA_API_URL", None)
    out = subprocess.run([sys.executable, "-c", "from curation.cli.main import main; main()", "annotate", "pull",
                          "--dataset", "team", "--json"], env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"pull failed: {out.stderr.strip()[-500:]}")
    store = Store.open(home)
    with store.connect() as conn:
        rows = conn.execute(sa.select(rating_responses.c.record_id, rating_responses.c.annotator)
                            .where(rating_responses.c.status == "submitted", rating_responses.c.dataset == "team")).all()
    store.dispose()
    return {(record, annotator): 1 for record, annotator in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=120, help="seconds of annotation (the issue's run: 600)")
    parser.add_argument("--kill-at", type=float, default=None, help="SIGKILL the server this many seconds in, restart it")
    parser.add_argument("--no-pull", action="store_true", help="skip the check through `curate annotate pull`")
    parser.add_argument("--home", default=None, help="Curate home (default: a fresh temporary folder)")
    parser.add_argument("--mark", default=None, help="a file that exists while the annotators run (for a profiler)")
    args = parser.parse_args()

    from annotations.server import start_background
    from annotations.server.settings import free_port

    home = Path(args.home or tempfile.mkdtemp(prefix="curate-team-"))
    port, api_key = free_port(), "team." + secrets.token_hex(8)
    started = time.perf_counter()
    server, dataset_id, pushed = setup(home, args.records, args.annotators, port, api_key)
    setup_s = time.perf_counter() - started
    servers = [server]
    try:
        password = secrets.token_hex(8)
        users = make_team(server.url, api_key, args.annotators, password)

        def restart():
            servers.append(start_background(home, port=port, api_key=api_key, ready_timeout=600))
            return servers[-1]

        load_before = os.getloadavg()
        if args.mark:
            Path(args.mark).touch()
        team, rss, events = run_team(server, dataset_id, users, args.duration, args.kill_at, restart)
        if args.mark:
            Path(args.mark).unlink()
        load_after = os.getloadavg()
        with httpx.Client(base_url=server.url, headers={"X-Argilla-Api-Key": api_key}, timeout=60) as owner:
            names = {u["id"]: u["username"] for u in owner.get("/api/v1/users").json()["items"]}
        pulled = None if args.no_pull else pulled_responses(home, api_key)
        checks = check(team, home / "argilla" / "argilla.db", dataset_id, names, pulled)
    finally:
        for handle in servers:
            handle.stop()
    seconds = args.duration if not rss else max(rss[-1][0], 1.0)
    actions = sum(len(v) for k, v in team.latency.items() if k in ("submit", "submit_draft", "discard"))
    print(orjson.dumps({
        "annotators": args.annotators, "records": pushed, "duration_s": args.duration, "setup_s": round(setup_s, 1),
        "responses_per_s": round(actions / seconds, 2), "requests_per_s": round(sum(map(len, team.latency.values())) / seconds, 1),
        "endpoints": {name: percentiles(samples) for name, samples in sorted(team.latency.items())},
        "server_cpu_s": round(team.server_cpu_s, 1),
        "server_cpu_ms_per_request": round(1000 * team.server_cpu_s / max(sum(map(len, team.latency.values())), 1), 1),
        "errors": dict(team.errors), "server_rss_mb": rss, "restarts": events, "checks": checks,
        "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
    }, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
