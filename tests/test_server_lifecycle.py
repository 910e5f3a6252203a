"""`curate annotate serve` as a process: users, restarts, signals, a taken port, and the exposure guard."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import pytest

from annotations.server.settings import ServerSettings, free_port


def wait_ready(url: str, key: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(f"{url}/api/v1/me", headers={"X-Argilla-Api-Key": key}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not start")


@pytest.mark.slow
def test_serve_users_signal_and_restart_keep_everything(home, cli, monkeypatch):
    import argilla as rg

    from annotations.server import start_background

    key, password = "key-" + secrets.token_hex(10), "pw-" + secrets.token_hex(8)
    port = free_port()
    env = {**os.environ, "ARGILLA_API_KEY": key, "CURATE_ANNOTATE_OWNER_PASSWORD": password}
    process = subprocess.Popen(
        [sys.executable, "-m", "curation.cli.main", "annotate", "serve", "--home", str(home), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, key, process)

    client = rg.Argilla(api_url=url, api_key=key)
    settings = rg.Settings(fields=[rg.TextField(name="text")], questions=[rg.RatingQuestion(name="helpfulness", values=[0, 1, 2, 3, 4])],
                           metadata=[rg.FloatMetadataProperty(name="failure_score")])
    dataset = rg.Dataset(name="kept", settings=settings, workspace="argilla", client=client).create()
    dataset.records.log([rg.Record(id=f"r{i}", fields={"text": f"text {i}"}, metadata={"failure_score": i / 10}) for i in range(10)])

    monkeypatch.setenv("CURATE_USER_PASSWORD", "carol-password")
    added = cli.json("annotate", "users", "add", "carol", "--role", "annotator", "--home", home)
    assert added == {"user": "carol", "role": "annotator", "workspaces": ["argilla"], "created": True}
    monkeypatch.setenv("CURATE_USER_PASSWORD", "short")
    assert "at least 8 characters" in cli("annotate", "users", "add", "dave", "--home", home, code=1).stderr
    token = httpx.post(f"{url}/api/v1/token", data={"username": "carol", "password": "carol-password"}).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/api/v1/me", headers=bearer).json()["role"] == "annotator"

    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"127.0.0.1:{port}" in output and key not in output and password not in output
    assert key not in (home / "argilla" / "server.log").read_text() if (home / "argilla" / "server.log").exists() else True

    # A restart rebuilds the index from the database and the login token is still valid (the auth secret persists).
    monkeypatch.setenv("ARGILLA_API_KEY", key)
    monkeypatch.setenv("CURATE_ANNOTATE_OWNER_PASSWORD", password)
    with start_background(home) as again:
        body = {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]}]}}
        found = httpx.post(f"{again.url}/api/v1/me/datasets/{dataset.id}/records/search?limit=3", json=body, headers=bearer)
        assert found.status_code == 200, found.text
        assert found.json()["total"] == 10
        assert [item["record"]["external_id"] for item in found.json()["items"]] == ["r9", "r8", "r7"]
        assert key not in again.log_path.read_text()


def test_a_taken_port_is_one_clear_line(cli, argilla_server, monkeypatch):
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    port = str(urlparse(argilla_server.url).port)
    result = cli("annotate", "serve", "--port", port, code=1)
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is already in use; stop what runs there or pass --port"


def test_a_network_interface_needs_a_non_default_key_and_password(cli, monkeypatch):
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    monkeypatch.delenv("CURATE_ANNOTATE_OWNER_PASSWORD", raising=False)
    result = cli("annotate", "serve", "--host", "0.0.0.0", code=1)
    assert "refusing to listen on 0.0.0.0 with the default API key" in result.stderr
    monkeypatch.setenv("ARGILLA_API_KEY", "k-" + secrets.token_hex(8))
    assert "owner password" in cli("annotate", "serve", "--host", "0.0.0.0", code=1).stderr
    monkeypatch.setenv("CURATE_ANNOTATE_OWNER_PASSWORD", "p-" + secrets.token_hex(8))
    ServerSettings.resolve(host="0.0.0.0").check_exposure()  # both set: allowed
    ServerSettings.resolve(host="::1").check_exposure()
