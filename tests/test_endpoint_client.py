"""The one chat-endpoint client (curation.endpoints) against the fault-injecting local server: what each kind of
failure becomes, JSON and SSE answers, the answer-size cap, the shared Retry-After, caps, and the stop event."""
from __future__ import annotations

import threading
import time

import pytest

from curation.endpoints import Budget, Capped, ChatClient, Endpoint, EndpointError, EndpointSettings, api_keys
from curation.errors import CurateError
from tests.chat_fault_server import FaultServer

MESSAGES = [{"role": "user", "content": "How do I grow basil?"}]


def client(**kw) -> ChatClient:
    budget = kw.pop("budget", Budget())
    stop = kw.pop("stop", threading.Event())
    settings = EndpointSettings(**{"backoff": 0.01, "retries": 0, "timeout": 2.0, "concurrency": 2, **kw})
    return ChatClient(settings, budget, stop, {})


def test_json_and_sse_answers_and_extra_fields():
    with FaultServer(plan=["ok", "sse"]) as server:
        c = client()
        endpoint = Endpoint(url=server.url, model="m", temperature=0.0)
        first = c.complete(endpoint, MESSAGES, seed=7, extra={"response_format": {"type": "json_object"}})
        second = c.complete(endpoint, MESSAGES)
        c.close()
        bodies = [body for _, _, body, _ in server.requests]
    assert first.text.startswith("candidate from m for: How do I grow basil?") and first.usage["total_tokens"] > 0
    assert second.text.split() == first.text.split() and second.usage is None and second.tokens > 0  # estimated
    assert bodies[0]["seed"] == 7 and bodies[0]["response_format"] == {"type": "json_object"}
    assert "seed" not in bodies[1] and "response_format" not in bodies[1] and bodies[1]["stream"] is False


@pytest.mark.parametrize("action, kind, status", [("500", "http", 500), ("hang", "timeout", None),
                                                   ("schema400", "http", 400), ("big", "answer", None)])
def test_each_failure_has_a_kind(action, kind, status):
    with FaultServer(default=action, hang=1.5) as server:
        c = client(timeout=0.5)
        with pytest.raises(EndpointError) as caught:
            c.complete(Endpoint(url=server.url, model="m"), MESSAGES, extra={"response_format": {}},
                       max_body=1 << 20)
        c.close()
    assert caught.value.kind == kind and caught.value.status == status
    assert caught.value.fatal is False


def test_a_refused_port_is_a_connect_error_without_the_password():
    c = client()
    with pytest.raises(EndpointError) as caught:
        c.complete(Endpoint(url="http://user:pw@127.0.0.1:9/v1", model="m"), MESSAGES)
    c.close()
    assert caught.value.kind == "connect" and "pw" not in str(caught.value)


def test_retry_after_on_503_is_honoured_then_the_answer_comes():
    with FaultServer(plan=["503"], retry_after="0.4") as server:
        c = client(retries=2)
        started = time.monotonic()
        c.complete(Endpoint(url=server.url, model="m"), MESSAGES)
        c.close()
    assert time.monotonic() - started >= 0.35 and len(server.requests) == 2


def test_caps_and_stop():
    with FaultServer() as server:
        endpoint = Endpoint(url=server.url, model="m")
        c = client(budget=Budget(max_requests=1))
        c.complete(endpoint, MESSAGES)
        with pytest.raises(Capped):
            c.complete(endpoint, MESSAGES)
        c.close()
    stop = threading.Event()
    with FaultServer(default="429", retry_after="5") as server:
        c = client(retries=3, stop=stop)
        threading.Timer(0.3, stop.set).start()
        started = time.monotonic()
        with pytest.raises(EndpointError, match="run stopped"):
            c.complete(Endpoint(url=server.url, model="m"), MESSAGES)
        c.close()
    assert time.monotonic() - started < 2


def test_api_keys_come_from_the_named_variable(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-1")
    endpoints = [Endpoint(url="http://x/v1", model="a", api_key_env="MY_JUDGE_KEY"), Endpoint(url="http://x/v1", model="b")]
    assert api_keys(endpoints, "judge") == {"a": "sk-1", "b": None}
    monkeypatch.delenv("MY_JUDGE_KEY")
    with pytest.raises(CurateError, match=r"judge a reads its API key from \$MY_JUDGE_KEY"):
        api_keys(endpoints, "judge")
