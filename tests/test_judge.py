"""`curate judge` against a fault-injecting local server: judgements stored apart and cached, several endpoints
sharing the load, response_format dropped after a 400 about it, tolerant parsing, unparseable answers retried once
and counted, 429/5xx with Retry-After, hangs, a 5 MB answer, values outside 0–4, caps, and kill -9.

These tests check the judge's mechanics. No model able to judge exists offline; the value of the judge's ratings is
measured with a simulated judge of known quality (benchmarks/judge.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest
import sqlalchemy as sa

from curation.endpoints import Endpoint
from curation.errors import ConfigError
from curation.ingest import ingest
from curation.judge import ATTRIBUTES, latest_judgements
from curation.judge.answer import parse
from curation.judge.config import JudgeSettings, load_rubric
from curation.judge.run import Judge
from curation.synthetic import write_jsonl
from curation.store.judge_tables import judgements
from curation.store.tables import conversations
from tests.chat_fault_server import FaultServer, judgement_for

KEYS = {"judged", "cached", "failed", "unparseable", "requests", "tokens", "status", "run_id"}


@pytest.fixture
def traffic(store, tmp_path) -> list[str]:
    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 40, seed=5)], progress=False)
    with store.connect() as conn:
        return list(conn.execute(sa.select(conversations.c.id).order_by(conversations.c.id)).scalars())


def rows(store) -> list:
    with store.connect() as conn:
        return conn.execute(sa.select(judgements).order_by(judgements.c.conversation_id)).all()


def judge(store, url: str | list[str], plain: bool = True, **kw) -> dict:
    urls = [url] if isinstance(url, str) else url
    endpoints = [Endpoint(url=u, model=f"judge-{i}", temperature=0.0) for i, u in enumerate(urls)]
    ids = kw.pop("ids", None)
    settings = JudgeSettings(endpoints=endpoints, **{"backoff": 0.01, "concurrency": 4, **kw})
    return Judge(settings, redact=lambda t: t.replace("@", "[at]")).judge(store, ids=ids, every=plain, progress=False)


def test_cli_judges_stores_apart_and_a_rerun_asks_nothing(cli, store, traffic):
    with FaultServer(default="judge") as server:
        first = cli.json("judge", "--all", "--url", server.url, "--model", "jm", "--concurrency", "3")
        again = cli.json("judge", "--all", "--url", server.url, "--model", "jm")
        assert KEYS <= set(first) and first["status"] == "done" and first["run_id"]
        assert first["judged"] == len(traffic) and first["failed"] == first["unparseable"] == 0
        assert first["requests"] == len(traffic) and first["tokens"] > 0
        assert again["judged"] == 0 and again["cached"] == len(traffic) and again["requests"] == 0
        assert len(server.requests) == len(traffic)
        sent = [body for _, _, body, _ in server.requests]
    assert all(b["model"] == "jm" and b["temperature"] == 0 and not b["stream"] for b in sent)
    assert all(b["response_format"]["type"] == "json_schema" for b in sent)
    rubric = load_rubric(cli.home)
    assert all(b["messages"][0] == {"role": "system", "content": rubric.text} for b in sent)
    assert all("<conversation>" in b["messages"][1]["content"] for b in sent)
    stored = rows(store)
    assert len(stored) == len(traffic) and {r.rubric_version for r in stored} == {rubric.version}
    by_id = {r.conversation_id: r for r in stored}
    with store.connect() as conn:
        latest = latest_judgements(conn)
        some = latest_judgements(conn, traffic[:3])
    assert set(latest) == set(traffic) and set(some) == set(traffic[:3])
    for cid, judged in latest.items():
        assert judged["model"] == "jm" and judged["rubric_version"] == rubric.version
        assert [judged[a] for a in ATTRIBUTES] == [getattr(by_id[cid], a) for a in ATTRIBUTES]
    # each judgement is the one the server gave for that conversation's request
    expected = {orjson.dumps(judgement_for(b)).decode() for b in sent}
    assert {orjson.dumps({**{a: getattr(r, a) for a in ATTRIBUTES}, "rationale": r.rationale}).decode()
            for r in stored} <= expected


def test_a_new_rubric_or_model_judges_again_and_budget_takes_only_unjudged(cli, store, traffic):
    with FaultServer(default="judge") as server:
        cli.json("judge", "--budget", "5", "--url", server.url, "--model", "jm")
        assert len(rows(store)) == 5
        more = cli.json("judge", "--budget", "5", "--url", server.url, "--model", "jm")
        assert more["judged"] == 5 and len({r.conversation_id for r in rows(store)}) == 10
        (cli.home / "rubric.md").write_text("Rate it. Answer JSON.")
        (cli.home / "curate.toml").write_text('[judge]\nrubric = "rubric.md"\n')
        new_rubric = cli.json("judge", "--ids", ",".join(traffic[:3]), "--url", server.url, "--model", "jm")
        new_model = cli.json("judge", "--ids", ",".join(traffic[:3]), "--url", server.url, "--model", "jm2")
        assert new_rubric["judged"] == 3 and new_model["judged"] == 3
        assert server.requests[-1][2]["messages"][0]["content"] == "Rate it. Answer JSON."
    assert len(rows(store)) == 16 and len({r.rubric_version for r in rows(store)}) == 2


def test_endpoints_share_the_load_and_a_conversation_keeps_its_judge(store, traffic):
    with FaultServer(default="judge", delay=0.02) as a, FaultServer(default="judge", delay=0.02) as b:
        first = judge(store, [a.url, b.url])
        assert first["judged"] == len(traffic)
        assert len(a.requests) > len(traffic) // 4 and len(b.requests) > len(traffic) // 4  # both worked
        assert len(a.requests) + len(b.requests) == len(traffic)  # no conversation judged twice
        second = judge(store, [b.url, a.url])  # the same models, listed the other way round: nothing to do
        assert second["cached"] == len(traffic) and second["requests"] == 0
    assert Counter(r.model for r in rows(store)) == {"judge-0": len(a.requests), "judge-1": len(b.requests)}


def test_a_400_about_response_format_is_retried_without_it_and_remembered(store, traffic):
    with FaultServer(default="schema400") as server:
        result = judge(store, server.url, concurrency=1)
    assert result["judged"] == len(traffic) and result["failed"] == 0
    with_schema = [body for _, _, body, _ in server.requests if "response_format" in body]
    assert len(with_schema) == 1 and len(server.requests) == len(traffic) + 1


def test_tolerant_parsing_and_unparseable_answers_retried_once_then_failed(store, traffic):
    plan = ["fenced", "range", "judge", "range", "range"] + ["judge"] * (len(traffic) - 3)
    with FaultServer(plan=plan, default="judge") as server:
        result = judge(store, server.url, concurrency=1)
    # 1: fenced, parsed; 2: out of range, then fine on the retry; 3: out of range twice -> failed
    assert result["unparseable"] == 3 and result["failed"] == 1 and result["judged"] == len(traffic) - 1
    assert result["status"] == "partial" and len(server.requests) == len(traffic) + 2
    assert "unparseable answer, twice" in next(iter(result["errors"].values()))


def test_faults_429_503_hang_and_a_5mb_answer_are_retried_or_counted(store, traffic):
    plan = ["429", "judge", "503", "judge", "hang", "judge", "big", "big"]
    with FaultServer(plan=plan, default="judge", retry_after="0.3", hang=3) as server:
        result = judge(store, server.url, concurrency=1, timeout=0.5, ids=traffic[:6], plain=False)
    times = [t for t, *_ in server.requests]
    assert times[1] - times[0] >= 0.25 and times[3] - times[2] >= 0.25  # Retry-After honoured on 429 and 503
    assert times[5] - times[4] >= 0.45  # the hung request was given up after the timeout, then retried
    assert result["judged"] == 5 and result["failed"] == 1 and result["unparseable"] == 2  # the 5 MB answers
    assert result["requests"] == len(server.requests) == 10


def test_an_endpoint_that_keeps_failing_is_stopped_and_caps_hold(store, traffic):
    with FaultServer(default="500") as bad:
        result = judge(store, bad.url, retries=1, stop_after=3, concurrency=1)
    assert result["failed"] == len(traffic) and result["judged"] == 0 and len(bad.requests) == 6
    assert "stopped calling it" in result["errors"]["judge-0"]
    with FaultServer(default="judge") as server:
        capped = judge(store, server.url, max_requests=4, concurrency=2)
    assert capped["judged"] == 4 and capped["capped"] == len(traffic) - 4 and capped["status"] == "partial"


def test_redaction_and_settings_errors(cli, store, traffic, tmp_path):
    with FaultServer(default="judge") as server:
        judge(store, server.url, ids=traffic[:1], plain=False)
        cli.json("judge", "--ids", traffic[1], "--url", server.url, "--model", "jm")
        sent = [b["messages"][1]["content"] for _, _, b, _ in server.requests]
    assert all("@" not in text for text in sent[:1])
    with pytest.raises(ConfigError, match="redacts PII"):
        Judge(JudgeSettings(endpoints=[Endpoint(url="http://x/v1", model="m")]))
    for body, message, code in [  # a bad setting is a usage error (exit 2)
        ('[[judge.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\nn = 2\n', "n is always 1", 2),
        ('[[judge.endpoints]]\nurl = "http://x/v1"\n', "needs both url and model", 2),
        ('[judge]\nrubric = "missing.md"\n[[judge.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\n', "cannot read the judge rubric", 1),
        ('[judge]\n', "no judge endpoints", 1),
    ]:
        (cli.home / "curate.toml").write_text(body)
        assert message in cli("judge", "--all", code=code).stderr
    (cli.home / "curate.toml").write_text('[[judge.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\n')
    assert JudgeSettings.resolve(cli.home).endpoints[0].temperature == 0
    cli("judge", "--url", "http://x/v1", "--model", "m", code=2)  # none of --all, --ids, --budget
    cli("judge", "--all", "--budget", "3", code=2)


@pytest.mark.parametrize("answer, ok", [
    ('{"helpfulness": 3, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 2, "rationale": "r"}', True),
    ('Sure.\n```json\n{"helpfulness": 3, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 2}\n```', True),
    ('<think>hmm {"helpfulness": 9}</think> {"Helpfulness": "3", "correctness": 2.0, "coherence": 4, "complexity": 1, '
     '"verbosity": 2} done', True),
    ('{"helpfulness": 3.5, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 2}', False),
    ('{"helpfulness": true, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 2}', False),
    ('{"helpfulness": 3, "correctness": 2, "coherence": 4, "complexity": 1}', False),
    ("I would rate this reply highly.", False),
    ("", False),
])
def test_parse(answer, ok):
    judged = parse(answer)
    assert (judged is not None) == ok
    if ok:
        assert [judged[a] for a in ATTRIBUTES] == [3, 2, 4, 1, 2]


def test_kill_9_mid_run_then_rerun_judges_only_what_is_missing(home, store, traffic):
    with FaultServer(default="judge", delay=0.1) as server:
        cmd = [sys.executable, "-m", "curation.cli.main", "judge", "--all", "--url", server.url, "--model", "jm",
               "--concurrency", "2", "--json"]
        env = {**os.environ, "CURATE_HOME": str(home)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.time() + 120
        while len(rows(store)) < 6:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = len(rows(store))
        asked_before = len(server.requests)
        assert 6 <= kept < len(traffic)
        rerun = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
        assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
        summary = orjson.loads(rerun.stdout)
    assert summary["cached"] == kept and summary["judged"] == len(traffic) - kept and summary["status"] == "done"
    assert summary["requests"] == len(traffic) - kept == len(server.requests) - asked_before
    assert len({r.conversation_id for r in rows(store)}) == len(rows(store)) == len(traffic)
