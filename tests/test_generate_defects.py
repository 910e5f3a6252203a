"""`curate generate` defects from issue 22: credentials in an endpoint URL, the 401 hint, a cap that hides every
failure, and replies longer than ingest allows."""
from __future__ import annotations

import uuid

import orjson
import sqlalchemy as sa

from annotations.generate import Endpoint, GenerateSettings, generate
from curation.ingest import ingest_records
from curation.store import loads
from curation.store.tables import conversations, runs
from tests.chat_fault_server import FaultServer

QUESTION = "Which of the two sorting algorithms, merge sort or quick sort, should I use for a linked list?"


def one_conversation(store, cid: str = "c1") -> str:
    ingest_records(store, [{"id": cid, "messages": [{"role": "user", "content": QUESTION},
                                                    {"role": "assistant", "content": "ok"}]}])
    return cid


def test_credentials_in_the_endpoint_url_are_sent_but_never_stored_or_exported(cli, store, tmp_path):
    one_conversation(store)
    with FaultServer() as server:
        host = server.url.split("//")[1]
        url = f"http://bob:pw-secret@{host}?key=sk-secret-query&api-version=1#frag"
        result = cli("generate", "--ids", "c1", "--url", url, "--model", "gen-a", "--json")
        assert len(server.requests) == 1
    assert orjson.loads(result.stdout)["generated"] == 1
    out = tmp_path / "export.jsonl"
    cli("export", "conversations", "--out", out)
    with store.connect() as conn:
        stored = [str(v) for row in conn.execute(sa.select(runs)) for v in row]
        stored += [str(v) for row in conn.execute(sa.select(conversations)) for v in row]
        meta = loads(conn.execute(sa.select(conversations.c.metadata).where(conversations.c.source == "generated"))
                     .scalar_one())
    assert meta["generated"]["endpoint"] == f"http://{host}"
    for text in [result.stdout, result.stderr, out.read_text(), *stored]:
        assert "sk-secret" not in text and "pw-secret" not in text and "bob" not in text
    # requests still carry them: the query string goes after the chat path
    assert Endpoint(url=url, model="m").chat_url.endswith("/v1/chat/completions?key=sk-secret-query&api-version=1#frag")


def test_a_refused_key_names_the_variable_curate_reads(cli, store, monkeypatch):
    one_conversation(store)
    with FaultServer(default="401") as server:
        without = cli("generate", "--ids", "c1", "--url", server.url, "--model", "m", code=1)
        assert "HTTP 401" in without.stderr and "--api-key-env NAME" in without.stderr and "$API_KEY" not in without.stderr
        monkeypatch.setenv("GEN_KEY", "sk-wrong")
        named = cli("generate", "--ids", "c1", "--url", server.url, "--model", "m", "--api-key-env", "GEN_KEY", code=1)
        assert "check the API key in $GEN_KEY" in named.stderr
        assert server.requests[-1][3]["Authorization"] == "Bearer sk-wrong"
    cli("generate", "--ids", "c1", "--api-key-env", "GEN_KEY", code=2)  # a key variable for no --url


def test_every_request_failing_under_a_request_cap_is_a_failure_and_exit_1(cli, store):
    ids = [one_conversation(store, f"c{i}") for i in range(3)]
    with FaultServer(default="500") as server:
        settings = GenerateSettings(endpoints=[Endpoint(url=server.url, model="m")], max_requests=2, backoff=0.01,
                                    concurrency=1)
        result = generate(store, ids=ids, settings=settings, progress=False)
        assert result["generated"] == 0 and result["failed"] == 1 and result["capped"] == 2
        assert "HTTP 500" in result["errors"]["m"] and "cap stopped its retries" in result["errors"]["m"]
        failed = cli("generate", "--ids", ",".join(ids), "--url", server.url, "--model", "m", "--max-requests", "2",
                     code=1)
    assert failed.stderr.startswith("error: no candidate generated: m: HTTP 500")


def test_a_reply_longer_than_ingest_allows_is_not_stored(store, home):
    one_conversation(store)  # 94 characters: within the limit below
    (home / "curate.toml").write_text("[ingest]\nmax_chars = 150\n")
    with FaultServer() as server:  # the reply repeats the question: 94 + 26 + 80 characters
        result = generate(store, ids=["c1"], settings=GenerateSettings(endpoints=[Endpoint(url=server.url, model="m")]),
                          progress=False)
    assert result["generated"] == 0 and result["failed"] == 1
    assert "over the limit of 150 (ingest.max_chars)" in result["errors"]["m"]
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(conversations.c.source == "generated")).scalar_one() == 0


def test_export_scrubs_an_endpoint_url_stored_with_credentials_before_the_fix(cli, store, tmp_path):
    # a generated candidate as `curate generate` stored it before it dropped the query string
    ingest_records(store, [{"id": "old", "messages": [{"role": "user", "content": QUESTION},
                                                      {"role": "assistant", "content": "candidate"}],
                            "metadata": {"generated": {"endpoint": "http://bob:pw-old@gen.example:8000/v1"
                                                                   "?key=sk-old-secret&api-version=1#frag",
                                                       "model": "gen-a"}}}])
    with store.connect() as conn:  # the store still holds it: only what leaves it is scrubbed
        assert "sk-old-secret" in conn.execute(sa.select(conversations.c.metadata)).scalar_one()
    for name in ("export.jsonl", "export.parquet"):
        cli("export", "conversations", "--out", tmp_path / name)
    row = orjson.loads((tmp_path / "export.jsonl").read_bytes().splitlines()[0])
    assert row["metadata"]["generated"] == {"endpoint": "http://gen.example:8000/v1", "model": "gen-a"}
    for name in ("export.jsonl", "export.parquet"):
        data = (tmp_path / name).read_bytes()
        assert b"sk-old-secret" not in data and b"pw-old" not in data and b"bob" not in data


def test_push_generate_takes_the_key_variable_like_generate(cli, store, argilla_env, monkeypatch):
    one_conversation(store)
    cli("annotate", "push", "--dataset", "keys", "--pairs", "--generate-api-key-env", "GEN_KEY", code=2)  # no URL
    monkeypatch.setenv("GEN_KEY", "sk-from-the-variable")
    with FaultServer(default="401") as server:
        result = cli.json("annotate", "push", "--dataset", f"keys-{uuid.uuid4().hex[:8]}", "--budget", "1", "--pairs",
                          "--generate-url", server.url, "--generate-model", "m", "--generate-api-key-env", "GEN_KEY")
        assert server.requests and all(r[3]["Authorization"] == "Bearer sk-from-the-variable" for r in server.requests)
    assert result["generation_failed"] == 1
    assert "check the API key in $GEN_KEY" in orjson.dumps(result).decode()
