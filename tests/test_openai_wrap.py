"""`curation.integrations.openai.wrap`: the real `openai` client against a real local HTTP server that speaks the
chat-completions protocol (tests/openai_server.py), logging into a real store."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import openai
import orjson
import pytest
import sqlalchemy as sa

from curation import ConversationLogger
from curation.integrations.openai import last_conversation_id, wrap
from curation.store import loads
from curation.store.tables import conversations, feedback
from tests.openai_server import serve

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def base_url():
    with serve() as url:
        yield url


@pytest.fixture
def logger(home, database_url):
    logger = ConversationLogger(home, url=database_url, batch_size=20, flush_interval=0.05)
    yield logger
    logger.close()


def rows(store) -> dict[str, dict]:
    with store.connect() as conn:
        found = {r.id: r._asdict() for r in conn.execute(sa.select(conversations))}
    for row in found.values():
        row["messages"], row["metadata"] = loads(row["messages"]), loads(row["metadata"])
    return found


def events(store) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(feedback.c.conversation_id, feedback.c.type)))


def test_sync_call_is_logged_with_everything_and_feedback_attaches(base_url, logger, store):
    client = wrap(openai.OpenAI(base_url=base_url, api_key="test"), logger=logger)
    reply = client.chat.completions.create(model="local-model", messages=ASK, user="user-7", temperature=0.3,
                                           curate_session="chat-1", curate_metadata={"app": "support", "ab": "v2"})
    assert reply.curate_id == last_conversation_id()
    assert "curate" not in reply.model_dump_json()  # the id is no part of the response's JSON
    logger.feedback(reply.curate_id, "thumbs_down")
    logger.flush()
    row = rows(store)[reply.curate_id]
    assert row["messages"] == [*ASK, {"role": "assistant", "content": reply.choices[0].message.content}]
    assert row["model"] == "local-model" and row["session_id"] == "chat-1" and row["user_hash"]
    meta = row["metadata"]
    assert meta["app"] == "support" and meta["ab"] == "v2"
    info = meta["openai"]
    assert info["response_id"] == reply.id and info["finish_reason"] == "stop" and info["latency_ms"] > 0
    assert info["usage"] == reply.usage.model_dump(exclude_none=True) and info["params"] == {"temperature": 0.3}
    assert events(store) == [(reply.curate_id, "thumbs_down")]


def test_stream_with_tool_calls_is_assembled_when_it_ends(base_url, logger, store):
    client = wrap(openai.OpenAI(base_url=base_url, api_key="test"), logger=logger)
    plain = openai.OpenAI(base_url=base_url, api_key="test")
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    stream = client.chat.completions.create(model="m", messages=ask, tools=TOOLS, stream=True,
                                            stream_options={"include_usage": True})
    assert isinstance(stream, openai.Stream) and stream.curate_id == last_conversation_id()
    seen = [chunk.model_dump(exclude={"id", "created"}) for chunk in stream]
    expected = [chunk.model_dump(exclude={"id", "created"}) for chunk in
                plain.chat.completions.create(model="m", messages=ask, tools=TOOLS, stream=True,
                                              stream_options={"include_usage": True})]
    assert len(seen) == len(expected)  # the app sees the stream as the SDK gives it
    calls = [c for chunk in seen for choice in chunk["choices"] for c in choice["delta"]["tool_calls"] or []]
    arguments = "".join(c["function"]["arguments"] or "" for c in calls)
    # the tool result goes back, streamed again: the second call's reply is text
    history = [*ask, {"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0]["id"], "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 21}'}]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in
                   client.chat.completions.create(model="m", messages=history, tools=TOOLS, stream=True) if chunk.choices)
    logger.flush()
    found = rows(store)
    first = found[stream.curate_id]
    assert first["messages"][-1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": calls[0]["id"], "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]}
    assert orjson.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    info = first["metadata"]["openai"]
    assert info["finish_reason"] == "tool_calls" and info["usage"]["total_tokens"] > 0 and info["ttft_ms"] > 0
    assert info["params"] == {"tools": ["get_weather"]}
    second = found[last_conversation_id()]
    assert second["messages"] == [*history, {"role": "assistant", "content": text}]
    assert "usage" not in second["metadata"]["openai"]  # no include_usage: the server sent none


def test_async_client_calls_and_streams_are_logged(base_url, logger, store):
    client = wrap(openai.AsyncOpenAI(base_url=base_url, api_key="test"), logger=logger)

    async def chat(i: int) -> tuple[str, str, str]:
        ask = [{"role": "user", "content": f"question {i}"}]
        reply = await client.chat.completions.create(model="m", messages=ask)
        assert last_conversation_id() == reply.curate_id  # each task sees its own call
        stream = await client.chat.completions.create(model="m", messages=ask, stream=True)
        assert isinstance(stream, openai.AsyncStream)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        return reply.curate_id, reply.choices[0].message.content, stream.curate_id, text

    async def main():
        return await asyncio.gather(*(chat(i) for i in range(5)))

    results = asyncio.run(main())
    logger.flush()
    found = rows(store)
    assert len(found) == 10
    for whole_id, whole, streamed_id, streamed in results:
        assert found[whole_id]["messages"][-1]["content"] == whole
        assert found[streamed_id]["messages"][-1]["content"] == streamed


def test_server_errors_reach_the_app_and_logging_goes_on(base_url, logger, store):
    client = wrap(openai.OpenAI(base_url=base_url, api_key="test", max_retries=0), logger=logger)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fail-500", messages=ASK)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fail-400", messages=ASK, stream=True)
    stream = client.chat.completions.create(model="drop-mid-stream", messages=ASK, stream=True)
    with pytest.raises(Exception) as broken:  # what the SDK raises when the connection drops: httpx's error
        for _ in stream:
            pass
    assert not isinstance(broken.value, AssertionError)
    # the app stops reading early: the reply so far is kept, marked abandoned
    early = client.chat.completions.create(model="m", messages=ASK, stream=True)
    next(iter(early))
    next(iter(early))
    early.close()
    ok = client.chat.completions.create(model="m", messages=ASK)
    logger.flush()
    found = rows(store)
    assert set(found) == {stream.curate_id, early.curate_id, ok.curate_id}
    assert "stream_error" in found[stream.curate_id]["metadata"]["openai"]
    assert found[early.curate_id]["metadata"]["openai"]["finish_reason"] is None
    assert events(store) == [(early.curate_id, "abandoned")]


def test_regeneration_is_linked_and_push_finds_the_sibling(base_url, logger, store):
    from annotations.pairing import pair_siblings
    from curation.messages import context_key
    from annotations.routing import Pick

    client = wrap(openai.OpenAI(base_url=base_url, api_key="test"), logger=logger)
    history = [{"role": "user", "content": "Tell me a joke"}]
    first = client.chat.completions.create(model="m", messages=history, user="alice")
    history.append({"role": "assistant", "content": "appended by the app after the call"})  # must not leak back
    again = client.chat.completions.create(model="m", messages=history[:1], user="alice", stream=True)
    for _ in again:
        pass
    other_user = client.chat.completions.create(model="m", messages=history[:1], user="bob")
    logger.flush()
    found = rows(store)
    a, b = found[first.curate_id], found[again.curate_id]
    assert a["messages"][-1]["content"] != b["messages"][-1]["content"]
    assert len(a["messages"]) == 2
    assert context_key(a["messages"]) == context_key(b["messages"])
    assert b["metadata"]["regenerates"] == first.curate_id
    assert "regenerates" not in found[other_user.curate_id]["metadata"]  # same prompt, another user: no link
    assert events(store) == [(first.curate_id, "regenerated")]
    paired = pair_siblings(store, "wrap-test", [Pick(first.curate_id, 1.0, "ids")])
    assert paired[0].conversation_id_b in {again.curate_id, other_user.curate_id}  # both answer the same context


def test_n_choices_are_sibling_conversations(base_url, logger, store):
    client = wrap(openai.OpenAI(base_url=base_url, api_key="test"), logger=logger)
    reply = client.chat.completions.create(model="m", messages=ASK, n=3)
    assert reply.curate_ids[0] == reply.curate_id and len(set(reply.curate_ids)) == 3
    logger.flush()
    found = rows(store)
    assert [found[i]["messages"][-1]["content"] for i in reply.curate_ids] == [c.message.content for c in reply.choices]
    assert [found[i]["metadata"]["openai"]["choice"] for i in reply.curate_ids] == [0, 1, 2]


def test_content_parts_iterators_and_sdk_objects_in_the_request(base_url, logger, store):
    client = wrap(openai.OpenAI(base_url=base_url, api_key="test"), logger=logger)
    first = client.chat.completions.create(model="m", messages=ASK)
    parts = [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
             {"type": "text", "text": "this image"}]
    messages = iter([*ASK, first.choices[0].message, {"role": "user", "content": parts}])  # a generator, an SDK object
    reply = client.chat.completions.create(model="m", messages=messages)
    assert reply.choices[0].message.content.split()[-3:] == ["Describe", "this", "image"]  # the server got it all
    logger.flush()
    logged = rows(store)[reply.curate_id]["messages"]
    assert logged[2] == {"role": "assistant", "content": first.choices[0].message.content}
    assert logged[3] == {"role": "user", "content": "Describe\n[image_url]\nthis image"}  # no image data logged


def test_wrapping_twice_logs_once_and_copies_stay_wrapped(base_url, logger, store):
    client = wrap(wrap(openai.OpenAI(base_url=base_url, api_key="test"), logger=logger), logger=logger)
    client.chat.completions.create(model="m", messages=ASK)
    copied = client.with_options(timeout=5).chat.completions.create(model="m", messages=ASK, curate_metadata={"k": 1})
    logger.flush()
    found = rows(store)
    assert len(found) == 2 and found[copied.curate_id]["metadata"]["k"] == 1


def test_unreachable_store_spools_and_ingest_recovers_everything(base_url, home, cli, tmp_path):
    spool = tmp_path / "spool.jsonl"
    # nothing listens on port 1: every write fails fast, as when the database host is down
    down = ConversationLogger(home, url="postgresql+psycopg://curate@127.0.0.1:1/curate", batch_size=10,
                              flush_interval=0.05, spool=spool)
    client = wrap(openai.OpenAI(base_url=base_url, api_key="test"), logger=down)
    ids = []
    for i in range(30):
        ask = [{"role": "user", "content": f"q{i % 10}"}]  # every context three times: 20 regenerations
        if i % 2:
            ids.append(client.chat.completions.create(model="m", messages=ask, user="u").curate_id)
        else:
            stream = client.chat.completions.create(model="m", messages=ask, user="u", stream=True)
            list(stream)
            ids.append(stream.curate_id)
    down.flush()
    down.close()
    assert down.spooled == 30 + 20 and down.written == 0
    summary = cli.json("ingest", spool)
    assert summary["quarantined"] == 0 and summary["conversations"] == 30 and summary["feedback_events"] == 20
    again = cli.json("ingest", spool)
    assert again["ingested"] == 0 and again["duplicates"] == 50


def test_docs_script_logs_fifty_calls_into_a_fresh_home(base_url, tmp_path):
    script = Path(__file__).resolve().parent.parent / "docs" / "examples" / "log_openai.py"
    home = tmp_path / "fresh-home"
    done = subprocess.run([sys.executable, str(script), "--home", str(home), "--base-url", base_url, "--model", "m"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OPENAI_API_KEY": "local"})
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(done.stdout.splitlines()[-1])
    assert summary["conversations"] == 50 and summary["spooled"] == 0
    assert summary["feedback"] == {"regenerated": 5, "thumbs_down": 5, "thumbs_up": 5}
