"""The real embedded Argilla server for tests: one per test session (it takes ~15 s to start).

`argilla_server` is a `ServerHandle` (.url, .api_key, .stop()); its home is a session temp folder, separate
from each test's Curate home. `argilla_env` also points ARGILLA_API_URL / ARGILLA_API_KEY at it for one test.
Datasets are shared across the session's tests, so give each test's dataset a unique name.
"""
from __future__ import annotations

import secrets

import pytest


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory: pytest.TempPathFactory):
    from annotations.server import start_background

    home = tmp_path_factory.mktemp("argilla-home")
    handle = start_background(home, api_key="test." + secrets.token_hex(12), owner_password=secrets.token_hex(8))
    yield handle
    handle.stop()


@pytest.fixture
def argilla_env(argilla_server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    return argilla_server
