"""`curate generate` against a fault-injecting local server: candidates stored as siblings with provenance, retries
on 429 (Retry-After), 500 and timeouts, per-run caps, a failing endpoint, a server dying mid-run, and kill -9."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from annotations.generate import GenerateSettings, Endpoint, candidate_id, generate
from curation.messages import context_key
from annotations.routing import load_candidates
from curation.errors import ConfigError, CurateError
from curation.ingest import ingest, ingest_records
from curation.synthetic import write_jsonl
from curation.store import loads
from curation.store.tables import conversations
from tests.chat_fault_server import FaultServer

REPO = Path(__file__).resolve().parent.parent
KEYS = {"conversations", "generated", "failed", "requests", "tokens"}


@pytest.fixture
def traffic(store, tmp_path):
    """Ids of sample conversations without a sibling (the sample repeats a few questions word for word), in order."""
    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 80, seed=5)], progress=False)
    with store.connect() as conn:
        rows = conn.execute(sa.select(conversations.c.id, conversations.c.messages).order_by(conversations.c.id)).all()
    keys = Counter(context_key(loads(m)) for _, m in rows)
    return [cid for cid, m in rows if keys[context_key(loads(m))] == 1]


def candidates(store) -> list:
    with store.connect() as conn:
        return conn.execute(sa.select(conversations).where(conversations.c.source == "generated")).all()


def settings(url: str, **kw) -> GenerateSettings:
    endpoint = {k: kw.pop(k) for k in ("n", "model", "name", "api_key_env") if k in kw}
    return GenerateSettings(endpoints=[Endpoint(url=url, **{"model": "gen-a", **endpoint})],
                            **{"backoff": 0.01, "concurrency": 4, **kw})


def test_cli_generates_siblings_with_provenance_and_a_rerun_asks_for_nothing(cli, store, traffic):
    with FaultServer() as server:
        first = cli.json("generate", "--ids", ",".join(traffic[:12]), "--url", server.url, "--model", "gen-a", "--concurrency", "3")
        assert KEYS <= set(first)
        assert first["conversations"] == 12 and first["generated"] == 12 and first["failed"] == 0
        assert first["requests"] == 12 and first["tokens"] > 0 and first["status"] == "done"
        again = cli.json("generate", "--ids", ",".join(traffic[:12]), "--url", server.url, "--model", "gen-a")
        assert again["generated"] == 0 and again["existing"] == 12 and again["requests"] == 0
        assert len(server.requests) == 12
    rows = candidates(store)
    assert len(rows) == 12
    with store.connect() as conn:
        parents = dict(conn.execute(sa.select(conversations.c.id, conversations.c.messages)).all())
    for row in rows:
        meta = loads(row.metadata)["generated"]
        parent = loads(parents[meta["from"]])
        messages = loads(row.messages)
        assert row.id == candidate_id(meta["from"], Endpoint(url=server.url, model="gen-a"))
        assert row.model == "gen-a" and row.source == "generated" and row.user_hash is None
        assert messages[-1]["role"] == "assistant" and messages[-1]["content"].startswith("candidate from gen-a")
        assert context_key(messages) == context_key(parent)  # a sibling: same context, another reply
        assert meta["generator"] == "gen-a" and meta["params"] == {"temperature": 1.0, "max_tokens": 512, "n": 1}
        assert isinstance(meta["seed"], int) and meta["usage"]["total_tokens"] > 0
    sent = [body for _, _, body, _ in server.requests]
    assert all(b["model"] == "gen-a" and b["messages"][-1]["role"] == "user" and not b["stream"] for b in sent)
    assert {b["seed"] for b in sent} == {loads(r.metadata)["generated"]["seed"] for r in rows}
    # a generated candidate is never routed on its own
    assert not {r.id for r in rows} & set(load_candidates(store, "any").ids)


def test_429_waits_for_retry_after_500_and_timeouts_are_retried(store, traffic):
    with FaultServer(plan=["429", "500", "hang"], retry_after="0.6", hang=3) as server:
        result = generate(store, ids=traffic[:3], settings=settings(server.url, concurrency=1, timeout=0.5), progress=False)
    assert result["generated"] == 3 and result["failed"] == 0 and result["requests"] == 6
    times = [t for t, *_ in server.requests]
    assert times[1] - times[0] >= 0.55  # Retry-After 0.6 s honoured (the backoff alone is 0.01 s)
    assert times[3] - times[2] >= 0.45  # the hung request was given up after the 0.5 s timeout, then retried


def test_retry_after_holds_back_every_worker_of_that_endpoint(store, traffic):
    with FaultServer(plan=["429"], retry_after="0.8", delay=0.05) as server:
        result = generate(store, ids=traffic[:8], settings=settings(server.url, concurrency=4), progress=False)
    assert result["generated"] == 8
    first_429 = server.requests[0][0]
    later = [t for t, *_ in server.requests[1:]]
    # requests already in flight could not be held; none was started in the window after the 429's answer arrived
    started_in_window = [t for t in later if first_429 + 0.25 < t < first_429 + 0.75]
    assert not started_in_window, started_in_window


def test_sse_answers_are_read_and_tokens_estimated_without_usage(store, traffic):
    with FaultServer(default="sse") as server:
        result = generate(store, ids=traffic[:2], settings=settings(server.url), progress=False)
    assert result["generated"] == 2 and result["tokens"] > 0
    for row in candidates(store):
        assert loads(row.messages)[-1]["content"].startswith("candidate from gen-a for:")
        assert loads(row.metadata)["generated"]["usage"] is None


def test_a_failing_endpoint_is_counted_stopped_and_makes_the_run_partial(store, traffic):
    with FaultServer(default="500") as bad, FaultServer() as good:
        config = GenerateSettings(endpoints=[Endpoint(url=bad.url, model="broken"), Endpoint(url=good.url, model="fine")],
                                  retries=1, stop_after=3, backoff=0.01, concurrency=2)
        result = generate(store, ids=traffic[:20], settings=config, progress=False)
        assert result["status"] == "partial" and result["generated"] == 20 and result["failed"] == 20
        assert "HTTP 500: injected 500" in result["errors"]["broken"] and "stopped calling it" in result["errors"]["broken"]
        # stopped after 3 failed candidates (+ those already in flight), each tried twice
        assert len(bad.requests) <= 2 * (3 + config.concurrency)
    assert Counter(loads(r.metadata)["generated"]["generator"] for r in candidates(store)) == {"fine": 20}


def test_every_request_failing_is_exit_1_with_the_reason(cli, traffic):
    with FaultServer(default="500") as server:
        result = cli("generate", "--ids", traffic[0], "--url", server.url, "--model", "m", code=1)
    assert result.stderr.startswith("error: no candidate generated: m: HTTP 500")


def test_caps_on_requests_and_tokens_stop_the_run(store, traffic):
    with FaultServer() as server:
        capped = generate(store, ids=traffic[:10], settings=settings(server.url, max_requests=4, concurrency=1), progress=False)
        assert capped["generated"] == 4 and capped["capped"] == 6 and capped["cap"] == "requests"
        assert capped["status"] == "partial" and len(server.requests) == 4
        by_tokens = generate(store, ids=traffic[10:20], progress=False,
                             settings=settings(server.url, max_total_tokens=1, concurrency=1))
        assert by_tokens["generated"] == 1 and by_tokens["cap"] == "tokens" and by_tokens["capped"] == 9


def test_api_key_from_the_named_variable_and_pii_redacted_before_sending(store, monkeypatch):
    call = {"id": "c1", "type": "function", "function": {"name": "send", "arguments": '{"to": "jane.doe@example.com"}'}}
    ingest_records(store, [{"id": "pii", "messages": [
        {"role": "user", "content": "Mail me at jane.doe@example.com please"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sent"},
        {"role": "user", "content": "Thanks, and?"},
        {"role": "assistant", "content": "ok"}]}])
    monkeypatch.delenv("GEN_KEY", raising=False)
    with FaultServer() as server:
        with pytest.raises(CurateError, match=r"\$GEN_KEY, which is not set"):
            generate(store, ids=["pii"], settings=settings(server.url, api_key_env="GEN_KEY"), progress=False)
        monkeypatch.setenv("GEN_KEY", "sk-test-123")
        generate(store, ids=["pii"], settings=settings(server.url, api_key_env="GEN_KEY"), progress=False)
        _, _, body, headers = server.requests[-1]
    assert headers["Authorization"] == "Bearer sk-test-123"
    assert body["messages"][0]["content"] == "Mail me at [EMAIL] please"
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"to": "[EMAIL]"}'
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "sent"}
    stored = loads(candidates(store)[0].messages)
    assert stored[0]["content"] == "Mail me at jane.doe@example.com please"  # the parent's context, as stored


def test_conversations_with_a_sibling_or_without_a_reply_get_no_candidate(store, tmp_path):
    ingest_records(store, [
        {"id": "a1", "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
        {"id": "a2", "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hey there."}]},
        {"id": "b", "messages": [{"role": "user", "content": "Other?"}, {"role": "assistant", "content": "Yes."}]},
    ])
    with FaultServer() as server:
        result = generate(store, ids=["a1", "b"], settings=settings(server.url, n=2), progress=False)
    assert result["with_sibling"] == 1 and result["conversations"] == 1 and result["generated"] == 2
    assert {loads(r.metadata)["generated"]["from"] for r in candidates(store)} == {"b"}
    with pytest.raises(CurateError, match="not in the store"):
        generate(store, ids=["nope"], settings=settings("http://127.0.0.1:9/v1"), progress=False)


def test_curate_toml_endpoints_and_their_errors(cli, home, store, traffic):
    with FaultServer() as server:
        (home / "curate.toml").write_text(
            f'[generate]\nconcurrency = 2\n\n[[generate.endpoints]]\nurl = "{server.url}"\nmodel = "policy"\nn = 2\n'
            f'\n[[generate.endpoints]]\nurl = "{server.url}"\nmodel = "policy"\nname = "policy-hot"\ntemperature = 1.3\n')
        result = cli.json("generate", "--ids", traffic[0])
        assert result["generated"] == 3
        assert sorted(r[2]["temperature"] for r in server.requests) == [1.0, 1.0, 1.3]
    for body, message, code in [  # a bad setting is a usage error (exit 2); no endpoints at all is not
        ('[[generate.endpoints]]\nurl = "http://x/v1"\n', "needs both url and model", 2),
        ('[[generate.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\ntemprature = 1\n', "unknown key 'temprature'", 2),
        ('[[generate.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\n[[generate.endpoints]]\nurl = "http://y/v1"\nmodel = "m"\n',
         "both generator 'm'", 2),
        ('[generate]\nconcurrency = 0\n', "'concurrency' must be at least 1", 2),
        ('[generate]\n', "no generation endpoints", 1),
    ]:
        (home / "curate.toml").write_text(body)
        assert message in cli("generate", "--ids", traffic[0], code=code).stderr
    cli("generate", "--ids", traffic[0], "--url", "http://x/v1", code=2)  # --url without --model
    cli("generate", "--url", "http://x/v1", "--model", "m", code=2)  # neither --ids nor --budget
    with pytest.raises(ConfigError, match="must be an integer"):
        GenerateSettings.from_section({"retries": "many"})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_process(port: int, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "chat_fault_server.py"), "--port", str(port), *args],
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"http://")  # listening
    return proc


def test_server_dying_mid_run_then_a_rerun_generates_only_what_is_missing(store, traffic):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    dying = _server_process(port, "--die-after", "15")
    try:
        first = generate(store, ids=traffic[:40], settings=settings(url, retries=1, stop_after=2), progress=False)
    finally:
        dying.kill()
        dying.wait()
    assert first["status"] == "partial" and 0 < first["generated"] <= 15 and first["failed"] >= 1
    assert first["generated"] + first["failed"] + first["capped"] == 40
    with FaultServer(port=port) as server:
        second = generate(store, ids=traffic[:40], settings=settings(url), progress=False)
    assert second["existing"] == first["generated"] and second["generated"] == 40 - first["generated"]
    assert len(server.requests) == second["generated"]  # nothing asked twice
    parents = Counter(loads(r.metadata)["generated"]["from"] for r in candidates(store))
    assert parents == Counter({cid: 1 for cid in traffic[:40]})


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_never_makes_a_second_candidate(home, store, traffic):
    with FaultServer(delay=0.15) as server:
        cmd = [sys.executable, "-m", "curation.cli.main", "generate", "--budget", "40", "--url", server.url,
               "--model", "gen-a", "--concurrency", "2", "--json"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "CURATE_HOME": str(home)})
        deadline = time.time() + 120
        while len(candidates(store)) < 6:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = len(candidates(store))
        asked_before = len(server.requests)
        assert 6 <= kept < 40
        rerun = subprocess.run(cmd, capture_output=True, timeout=120, env={**os.environ, "CURATE_HOME": str(home)})
        assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
        summary = orjson.loads(rerun.stdout)
    assert summary["existing"] == kept and summary["generated"] == 40 - kept and summary["status"] == "done"
    assert summary["requests"] == 40 - kept == len(server.requests) - asked_before
    rows = candidates(store)
    assert len(rows) == 40 and len({loads(r.metadata)["generated"]["from"] for r in rows}) == 40


def test_a_bad_endpoint_setting_is_a_usage_error_naming_the_file_or_variable(cli, home, traffic, tmp_path, monkeypatch):
    from curation.config import SettingError
    from loops.loop.config import load

    (home / "curate.toml").write_text('[generate]\ntimeout = -1\n[[generate.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\n')
    out = cli("generate", "--ids", traffic[0], code=2).stderr
    assert "curate.toml [generate]: 'timeout' must be 0 or more" in out and len(out.strip().splitlines()) == 1
    (home / "curate.toml").write_text('[[generate.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\n')
    monkeypatch.setenv("CURATE_GENERATE_CONCURRENCY", "0")  # reported as the variable, not as curate.toml
    assert "error: CURATE_GENERATE_CONCURRENCY: 'concurrency' must be at least 1" in cli("generate", "--ids", traffic[0], code=2).stderr
    monkeypatch.setenv("CURATE_GENERATE_CONCURRENCY", "many")
    assert "CURATE_GENERATE_CONCURRENCY (generate concurrency)" in cli("generate", "--ids", traffic[0], code=2).stderr
    loop_file = tmp_path / "loop.toml"
    loop_file.write_text('[generate]\nretries = -2\n')
    with pytest.raises(SettingError, match=r"loop.toml: \[generate\]: 'retries' must be 0 or more"):
        load(loop_file)
    (home / "curate.toml").write_text('[[judge.endpoints]]\nurl = "ftp://x/v1"\nmodel = "m"\n')
    assert "must start with http://" in cli("judge", "--all", code=2).stderr
