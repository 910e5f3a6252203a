"""A team of annotators against the embedded server (benchmarks/annotators.py, shorter): every acknowledged
response is in argilla-server's database and, after `curate annotate pull`, in the Curate store; none twice; no
record served to a third annotator once two submissions were acknowledged; and the same after the server is
killed (SIGKILL) mid-run and restarted, with the index rebuilt from the database."""
from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap

import httpx
import pytest

from benchmarks.annotators import PENDING, check, make_team, pulled_responses, run_team, setup

RECORDS, ANNOTATORS = 150, 6


HOLDS = textwrap.dedent("""
    import tempfile, uuid
    import numpy as np
    import os
    os.environ["ARGILLA_HOME_PATH"] = tempfile.mkdtemp()  # argilla-server reads it at import; nothing is written
    from annotations.server import jobs
    jobs.install()
    from annotations.server.index import DatasetIndex
    from annotations.server.search.holds import behind_holds, hold, responded
    index = DatasetIndex({"t": "text"}, {}, [])
    for i in range(4):
        index.upsert({"id": uuid.uuid4(), "status": "pending", "inserted_at": i, "updated_at": i, "text": {"t": "x"}})
    dataset, users = uuid.uuid4(), [str(uuid.uuid4()) for _ in range(5)]

    def serve(user):  # what the queue request does: the order, then a hold on the page it serves
        top = int(behind_holds(np.arange(4), index, dataset, user, 2)[0])
        hold(dataset, [top], user)
        return top

    def answer(user, slot, status):  # what the engine does when a response is written
        index.set_response(slot, {"id": user, "user_id": user, "status": status, "values": {}})
        responded(dataset, slot, user, status)

    served = [serve(u) for u in users[:3]]
    assert served == [0, 0, 1], served  # two on the first record, the third annotator on the next
    answer(users[0], 0, "draft")
    answer(users[1], 0, "draft")
    assert serve(users[3]) == 1 and serve(users[4]) == 2  # two drafts still keep a record from a third annotator
    answer(users[0], 0, "discarded")  # a discard frees a place
    assert serve(users[2]) == 0
    print("ok")
""")


def test_the_queue_spreads_a_team_and_drafts_keep_their_place():
    """The holds (annotations/server/search/holds.py), in a process of their own: argilla-server's modules must not
    be imported into the test process."""
    out = subprocess.run([sys.executable, "-c", HOLDS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.fixture
def team_server(tmp_path):
    from annotations.server import start_background
    from annotations.server.settings import free_port

    home, port, api_key = tmp_path / "home", free_port(), "team." + secrets.token_hex(8)
    server, dataset_id, pushed = setup(home, RECORDS, ANNOTATORS, port, api_key)
    servers = [server]

    def restart():
        servers.append(start_background(home, port=port, api_key=api_key))
        return servers[-1]

    yield home, server, dataset_id, api_key, restart
    for handle in servers:
        handle.stop()


def _names(url: str, api_key: str) -> dict[str, str]:
    users = httpx.get(f"{url}/api/v1/users", headers={"X-Argilla-Api-Key": api_key}, timeout=60).json()["items"]
    return {u["id"]: u["username"] for u in users}


@pytest.mark.slow
def test_a_team_loses_nothing_and_no_record_goes_to_a_third_annotator(team_server):
    home, server, dataset_id, api_key, restart = team_server
    users = make_team(server.url, api_key, ANNOTATORS, secrets.token_hex(8))
    team, rss, _ = run_team(server, dataset_id, users, duration=25, rss_every=5)
    assert team.latency["submit"] and team.latency["fetch"] and rss
    pulled = pulled_responses(home, api_key)
    checks = check(team, home / "argilla" / "argilla.db", dataset_id, _names(server.url, api_key), pulled)
    assert checks["acknowledged_submitted"] > 0 and not team.errors, (checks, team.errors)
    assert checks["lost"] == 0 and checks["duplicated"] == 0 and checks["served_after_two_submitted"] == 0, checks
    assert checks["pull"]["acknowledged_submitted_missing"] == 0, checks
    assert checks["pull"]["responses_in_store"] >= checks["acknowledged_submitted"]


@pytest.mark.slow
def test_a_server_killed_mid_run_keeps_every_acknowledged_response_and_rebuilds_its_index(team_server):
    home, server, dataset_id, api_key, restart = team_server
    users = make_team(server.url, api_key, ANNOTATORS, secrets.token_hex(8))
    team, _, events = run_team(server, dataset_id, users, duration=30, kill_at=10, restart=restart)
    assert events and events[0]["killed_at_s"] >= 10
    checks = check(team, home / "argilla" / "argilla.db", dataset_id, _names(server.url, api_key))
    assert checks["lost"] == 0 and checks["duplicated"] == 0 and checks["served_after_two_submitted"] == 0, checks
    # The rebuilt index knows every response: each annotator's queue no longer holds what they answered.
    for name, token in users:
        mine = {record for record, user in team.acked if user == name}
        queue = httpx.post(f"{server.url}/api/v1/me/datasets/{dataset_id}/records/search?limit=1000",
                           headers={"Authorization": f"Bearer {token}"}, timeout=60,
                           json={"query": {}, "filters": {"and": PENDING[:1]}}).json()
        assert not mine & {item["record"]["id"] for item in queue["items"]}, name
        assert queue["total"] == RECORDS - _answered(home, name)


def _answered(home, name: str) -> int:
    """Responses of one annotator in argilla-server's database (some may have been written but not acknowledged
    when the server was killed)."""
    import sqlite3

    with sqlite3.connect(home / "argilla" / "argilla.db") as db:
        return db.execute("SELECT count(*) FROM responses p JOIN users u ON u.id = p.user_id WHERE u.username = ?",
                          (name,)).fetchone()[0]
