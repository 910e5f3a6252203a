"""The optional LLM labeller against a real local HTTP server that speaks OpenAI chat completions.

The server answers a label built from the keywords it was sent, so a label in the store proves the prompt carried
that cluster's c-TF-IDF keywords. Faults (500, garbage, a server that dies mid-run, a refused port, a slow answer)
must leave the c-TF-IDF labels and one warning.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import sqlalchemy as sa

from curation.cluster import CTfidfLabeller, LLMLabeller, make_labeller
from curation.cluster.llm_labels import clean_label
from curation.errors import ConfigError
from curation.store.failure_tables import clusters

GROUPS = 4  # clusters in the test data, each made of real arena-hard prompts from a few named topics


class ChatServer(ThreadingHTTPServer):
    """`POST /v1/chat/completions`; `mode` picks the behaviour, `requests` keeps what each call sent."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, mode: str = "ok"):
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = mode
        self.requests: list[dict] = []
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def answer_for(prompt: str) -> str:
    keywords = re.search(r"Keywords: (.*)", prompt).group(1).split(", ")
    return f'**Label:** "About {keywords[0]} and {keywords[1]}."\n\nThese requests all ask about {keywords[0]}.'


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        server: ChatServer = self.server  # type: ignore[assignment]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        n = len(server.requests)
        if server.mode == "500":
            return self._send(500, b'{"error": {"message": "model crashed"}}')
        if server.mode == "garbage":
            return self._send(200, b"<html>not json</html>")
        if server.mode == "slow":
            time.sleep(1.0)
        if server.mode == "dies" and n == 2:  # stop listening, then drop this connection without an answer
            server.shutdown()
            server.server_close()
            self.close_connection = True
            return
        content = answer_for(body["messages"][-1]["content"])
        self._send(200, json.dumps({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode())

    def _send(self, code: int, payload: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def chat_server():
    servers = []

    def start(mode: str = "ok") -> ChatServer:
        servers.append(ChatServer(mode))
        return servers[-1]

    yield start
    for s in servers:
        if s.socket.fileno() != -1:
            s.stop()


@pytest.fixture(scope="module")
def groups(shared_data) -> list[list[str]]:
    """GROUPS groups of 8 real prompts, each group from 4 neighbouring named topics of arena-hard."""
    questions = [json.loads(line) for line in (shared_data / "arena-hard-v0.1" / "question.jsonl").open()]
    by_topic: dict[str, list[str]] = {}
    for q in questions:
        by_topic.setdefault(q["cluster"], []).append(q["prompt"])
    topics = sorted(by_topic)[::10]  # spread over the alphabet: unrelated topics
    return [[p for t in topics[4 * g : 4 * g + 4] for p in by_topic[t]] for g in range(GROUPS)]


def texts_of(groups) -> dict[int, list[str]]:
    return {10 + g: texts for g, texts in enumerate(groups)}


def llm_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "curate.cluster" and r.levelno == logging.WARNING]


def test_labels_come_from_the_endpoint_and_keywords_stay_ctfidf(chat_server, groups, caplog):
    server = chat_server()
    texts = texts_of(groups)
    expected = CTfidfLabeller().label(texts)
    labeller = LLMLabeller(server.url, "tiny-chat", api_key="sk-test-123", max_examples=3, max_chars=50)
    out = labeller.label(texts)
    assert set(out) == set(expected)
    for cid, (label, keywords) in out.items():
        assert keywords == expected[cid][1]
        assert label == f"About {keywords[0]} and {keywords[1]}"  # cleaned: no markdown, prefix, quotes or dot
    assert labeller.stats_ == {"labelled": GROUPS, "failed": 0, "private": 0, "error": None}
    assert not llm_warnings(caplog)
    sent = server.requests
    assert [r["path"] for r in sent] == ["/v1/chat/completions"] * GROUPS
    assert all(r["auth"] == "Bearer sk-test-123" for r in sent)
    first = sent[0]["body"]  # clusters are asked in id order
    assert first["model"] == "tiny-chat" and first["temperature"] == 0
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert "at most 8 words" in first["messages"][0]["content"]
    prompt = first["messages"][1]["content"]
    assert ", ".join(expected[10][1]) in prompt
    shown = [line[2:] for line in prompt.splitlines() if line.startswith("- ")]
    assert shown == [" ".join(t.split())[:50] for t in texts[10][:3]]  # the most central three, cut to 50 chars


def test_no_key_no_authorization_header_and_the_key_comes_from_the_environment(chat_server, groups, monkeypatch):
    server = chat_server()
    monkeypatch.delenv("CURATE_LLM_API_KEY", raising=False)
    LLMLabeller(server.url, "m").label(texts_of(groups[:1]))
    monkeypatch.setenv("CURATE_LLM_API_KEY", "from-env")
    LLMLabeller(server.url + "/chat/completions", "m").label(texts_of(groups[:1]))  # a full endpoint URL works too
    assert [r["auth"] for r in server.requests] == [None, "Bearer from-env"]
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2


@pytest.mark.parametrize("mode, reason, calls", [
    ("500", "HTTP 500: model crashed", GROUPS),        # a server error is per request: the others are still asked
    ("garbage", "unexpected answer: JSONDecodeError", GROUPS),
    ("dies", "cannot connect", 2),                     # after the first connection failure it stops calling
    ("slow", "no answer within 0.3s", 1),
])
def test_endpoint_faults_keep_ctfidf_labels_and_warn_once(chat_server, groups, caplog, mode, reason, calls):
    server = chat_server(mode)
    texts = texts_of(groups)
    expected = CTfidfLabeller().label(texts)
    labeller = LLMLabeller(server.url, "m", api_key="sk-secret-key", timeout=0.3)
    out = labeller.label(texts)
    llm_ok = 1 if mode == "dies" else 0  # the first cluster was answered before the server died
    assert labeller.stats_["labelled"] == llm_ok and labeller.stats_["failed"] == GROUPS - llm_ok
    assert [out[c] for c in sorted(out)][llm_ok:] == [expected[c] for c in sorted(expected)][llm_ok:]
    assert len(server.requests) == calls
    (warning,) = llm_warnings(caplog)
    assert server.url in warning and reason in warning and f"{GROUPS - llm_ok} of {GROUPS} clusters" in warning
    assert ("stopped calling" in warning) == (mode in ("dies", "slow"))
    assert "sk-secret-key" not in warning and "\n" not in warning


def test_a_refused_port_is_one_warning_and_no_crash(groups, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = LLMLabeller(f"http://user:pw@127.0.0.1:{port}/v1", "m").label(texts_of(groups))
    assert out == CTfidfLabeller().label(texts_of(groups))
    (warning,) = llm_warnings(caplog)
    assert f"http://127.0.0.1:{port}/v1" in warning and "cannot connect" in warning and "pw" not in warning


@pytest.mark.parametrize("answer, label", [
    ('**Label:** "Sourdough bread baking."', "Sourdough bread baking"),
    ("<think>they bake\nbread</think>\nHere is a label:\n# Bread baking tips\nMore text", "Bread baking tips"),
    ("- `Python` *pandas* merges", "Python pandas merges"),
    ("Topic: one two three four five six seven eight nine ten", "one two three four five six seven eight"),
    ("  \n\n ", ""),
])
def test_answers_are_cleaned_to_one_short_line(answer, label):
    assert clean_label(answer) == label


def add_store_data(store, groups, users_per_group):
    """Conversations from the real prompts, one embedding space of clearly separated vectors per group."""
    from curation.embed.vectors import ensure_space, write_vectors
    from curation.ingest import ingest_records

    centres = np.random.default_rng(7).normal(size=(len(groups), 32))
    rng = np.random.default_rng(0)
    records, ids, rows = [], [], []
    for g, (texts, users) in enumerate(zip(groups, users_per_group)):
        for i, text in enumerate(texts):
            cid = f"g{g}-{i}"
            records.append({"id": cid, "user_id": f"g{g}-user{i % users}",
                            "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]})
            ids.append(cid)
            rows.append(centres[g] + rng.normal(scale=0.05, size=32))
    ingest_records(store, records)
    run = store.start_run("embed", {})
    space = ensure_space(store, "test|last_turn|torch", "test", "last_turn", "torch", 32, run)
    write_vectors(store, space, [(cid, f"h{cid}", np.asarray(v, np.float32)) for cid, v in zip(ids, rows)], run)
    store.finish_run(run, "done")


def stored_labels(store) -> dict[int, str]:
    with store.connect() as conn:
        return dict(conn.execute(sa.select(clusters.c.id, clusters.c.label)).all())


def test_cli_llm_labeller_end_to_end_sends_only_clusters_with_enough_users(cli, store, groups, chat_server, caplog):
    server = chat_server()
    add_store_data(store, groups, users_per_group=[6, 6, 6, 2])  # the last group has 2 users: below the threshold
    result = cli.json("cluster", "--k", str(GROUPS), "--labeller", "llm", "--llm-url", server.url,
                      "--llm-model", "tiny-chat", "--home", cli.home)
    assert result["clusters"] == GROUPS
    assert result["labeller"] == {"kind": "llm", "model": "tiny-chat", "labelled": GROUPS - 1, "failed": 0,
                                  "private": 1, "error": None}
    assert len(server.requests) == GROUPS - 1
    sent = json.dumps([r["body"] for r in server.requests])
    assert all(json.dumps(" ".join(t.split())[:40])[1:-1] not in sent for t in groups[3])  # the small cluster never left
    labels = stored_labels(store)
    assert sum(label.startswith("About ") for label in labels.values()) == GROUPS - 1
    assert not llm_warnings(caplog)


def test_curate_toml_switches_the_labeller_on_and_bad_settings_fail_in_one_line(cli, store, groups, chat_server):
    server = chat_server("500")
    add_store_data(store, groups, users_per_group=[6] * GROUPS)
    cli.home.mkdir(parents=True, exist_ok=True)
    (cli.home / "curate.toml").write_text(f'[cluster.labeller]\nkind = "llm"\nurl = "{server.url}"\nmodel = "m"\n')
    assert isinstance(make_labeller(store), LLMLabeller) and isinstance(make_labeller(store, kind="ctfidf"), CTfidfLabeller)
    result = cli.json("cluster", "--k", str(GROUPS), "--home", cli.home)  # no option: the config file asks for llm
    assert result["labeller"]["failed"] == GROUPS and len(server.requests) == GROUPS
    assert not any(label.startswith("About ") for label in stored_labels(store).values())  # c-TF-IDF kept
    assert f"LLM labels: 0 named by m, {GROUPS} kept c-TF-IDF" in cli("cluster", "--home", cli.home).stdout

    (cli.home / "curate.toml").write_text('[cluster.labeller]\nkind = "llm"\n')
    err = cli("cluster", "--home", cli.home, code=2).stderr  # a missing setting is a usage error (defect 8)
    assert err.count("\n") == 1 and "--llm-url" in err and "CURATE_LLM_URL" in err
    (cli.home / "curate.toml").write_text('[cluster.labeller]\nendpoint = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'endpoint'"):
        make_labeller(store)
    (cli.home / "curate.toml").unlink()
    assert "add --labeller llm" in cli("cluster", "--llm-url", server.url, "--home", cli.home, code=2).stderr
    assert "needs an endpoint model" in cli("cluster", "--labeller", "llm", "--llm-url", server.url,
                                            "--home", cli.home, code=2).stderr
    assert "ctfidf" in cli("cluster", "--labeller", "gpt", "--home", cli.home, code=2).stderr
    assert "labeller" not in cli.json("cluster", "--home", cli.home)  # the default stays c-TF-IDF
