"""The embedded server's doors: which Host names and web origins it answers, file modes, one server per home,
record-date range filters through the SDK, and the argilla-server version it was written for."""
from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import httpx
import pytest

from annotations.server.settings import ServerSettings, free_port
from curation.errors import ConfigError, CurateError

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A server with other allowed names and origins, in a time zone far from UTC, under the usual umask."""
    from annotations.server import start_background

    home = tmp_path_factory.mktemp("guarded") / "home"
    umask = os.umask(0o022)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "Asia/Kolkata")  # +05:30: a naive UTC time read as local time would be 5.5 h off
        handle = start_background(home, api_key="test." + secrets.token_hex(12), owner_password=secrets.token_hex(8),
                                  allowed_hosts=["annotate.example", "proxy.example:8443"],
                                  allowed_origins=["https://tool.example"])
    os.umask(umask)
    yield handle
    handle.stop()


def get(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/me/datasets", headers={"X-Argilla-Api-Key": key, **headers})


def preflight(url: str, origin: str, **headers: str) -> httpx.Response:
    return httpx.options(f"{url}/api/v1/me/datasets", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-argilla-api-key", **headers})


def test_a_foreign_origin_gets_no_cors_headers_and_no_preflight(argilla_server):
    url, key = argilla_server.url, argilla_server.api_key
    foreign = get(url, key, Origin=EVIL)
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
    assert "CURATE_ANNOTATE_ALLOWED_ORIGINS" in foreign.json()["detail"]
    refused = preflight(url, EVIL)
    assert refused.status_code == 403
    assert not any(name.startswith("access-control-") for name in refused.headers)
    assert preflight(url, "null").status_code == 403

    port = urlparse(url).port
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        answered = get(url, key, Origin=own)
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == own
        allowed = preflight(url, own)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == own
        assert "x-argilla-api-key" in allowed.headers["access-control-allow-headers"]
    plain = get(url, key)  # the SDK and curl send no Origin
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_a_host_that_is_not_the_server_is_refused(argilla_server):
    """DNS rebinding: a page on evil.example, re-pointed at 127.0.0.1, sends Host: evil.example:PORT."""
    url, key = argilla_server.url, argilla_server.api_key
    port = urlparse(url).port
    rebound = get(url, key, Host=f"evil.example:{port}")
    assert rebound.status_code == 400
    assert "evil.example" in rebound.json()["detail"] and "CURATE_ANNOTATE_ALLOWED_HOSTS" in rebound.json()["detail"]
    assert get(url, key, Host=f"127.0.0.1:{port + 1}").status_code == 400
    for name in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert get(url, key, Host=name).status_code == 200
    assert httpx.get(url + "/").status_code == 200  # the web UI's page


def test_configured_hosts_and_origins_are_allowed(guarded):
    url, key = guarded.url, guarded.api_key
    assert get(url, key, Host="annotate.example").status_code == 200  # a name without a port: any port
    assert get(url, key, Host="annotate.example:443").status_code == 200
    assert get(url, key, Host="proxy.example:8443").status_code == 200
    assert get(url, key, Host="proxy.example:8080").status_code == 400
    # Behind a TLS proxy that keeps the Host, the page's origin is https://that-name.
    assert get(url, key, Host="annotate.example", Origin="https://annotate.example").status_code == 200
    tool = preflight(url, "https://tool.example")
    assert tool.status_code == 200 and tool.headers["access-control-allow-origin"] == "https://tool.example"
    assert preflight(url, "https://tool.example.evil.example").status_code == 403


def test_allowed_hosts_and_origins_come_from_the_environment_and_curate_toml(home, monkeypatch):
    monkeypatch.setenv("CURATE_ANNOTATE_ALLOWED_HOSTS", "a.example, B.example:8443")
    assert ServerSettings.resolve(home).allowed_hosts == ["a.example", "b.example:8443"]
    monkeypatch.delenv("CURATE_ANNOTATE_ALLOWED_HOSTS")
    home.mkdir(parents=True, exist_ok=True)
    (home / "curate.toml").write_text('[annotate.server]\nallowed_origins = ["https://tool.example/"]\n')
    assert ServerSettings.resolve(home).allowed_origins == ["https://tool.example/"]

    from annotations.server.guard import AccessPolicy

    assert "https://tool.example" in AccessPolicy(ServerSettings.resolve(home)).origins
    with pytest.raises(ConfigError, match="write it as a browser sends it"):
        AccessPolicy(ServerSettings.resolve(home, allowed_origins=["tool.example/app"]))


def test_names_of_a_server_on_every_interface_or_ipv6(home):
    from annotations.server.guard import AccessPolicy

    everywhere = AccessPolicy(ServerSettings.resolve(home, host="0.0.0.0", port=6900))
    assert all(everywhere.host_allowed(h) for h in ("192.168.1.20:6900", "[fe80::1]:6900", "localhost:6900"))
    assert not any(everywhere.host_allowed(h) for h in ("evil.example:6900", "192.168.1.20:6901"))
    assert everywhere.origin_allowed("http://192.168.1.20:6900", "192.168.1.20:6900")
    assert not everywhere.origin_allowed("http://192.168.1.21:6900", "192.168.1.20:6900")
    ipv6 = ServerSettings.resolve(home, host="::1", port=6900)
    assert ipv6.url == "http://[::1]:6900"
    assert AccessPolicy(ipv6).host_allowed("[::1]:6900") and AccessPolicy(ipv6).host_allowed("localhost:6900")


def test_the_server_keeps_its_keys_private(guarded):
    folder = guarded.home / "argilla"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # what argilla-server writes there itself stays private too
    for name in ("argilla.db", "auth-secret", "server.log", "server.lock"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


def test_a_second_server_on_the_same_home_is_refused(guarded):
    env = {**os.environ, "ARGILLA_API_KEY": guarded.api_key, "CURATE_ANNOTATE_OWNER_PASSWORD": "pw-" + secrets.token_hex(8)}
    second = subprocess.run(
        [sys.executable, "-m", "curation.cli.main", "annotate", "serve", "--home", str(guarded.home), "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert second.returncode == 1, second.stderr
    port = urlparse(guarded.url).port
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: another Argilla server already serves {guarded.home} (pid {guarded.process.pid}, port {port}); "
        "stop it, or use another --home")
    assert get(guarded.url, guarded.api_key).status_code == 200


def test_a_lock_left_by_kill_9_blocks_nothing(tmp_path):
    from annotations.server.lock import hold_server_lock

    home = tmp_path / "home"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom annotations.server.lock import hold_server_lock\n"
         "from annotations.server.settings import ServerSettings\n"
         f"lock = hold_server_lock(ServerSettings.resolve({str(home)!r}, port=6999))\nprint('held', flush=True)\ntime.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    settings = ServerSettings.resolve(home, port=7001)
    with pytest.raises(CurateError, match=f"pid {holder.pid}, port 6999"):
        hold_server_lock(settings)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with hold_server_lock(settings) as lock:
        assert f'"pid": {os.getpid()}' in (home / "argilla" / "server.lock").read_text()
        assert not lock.closed


def test_record_date_ranges_through_the_sdk(guarded):
    import argilla as rg

    client = rg.Argilla(api_url=guarded.url, api_key=guarded.api_key)
    settings = rg.Settings(fields=[rg.TextField(name="text")], questions=[rg.RatingQuestion(name="helpfulness", values=[0, 1, 2, 3, 4])],
                           metadata=[rg.FloatMetadataProperty(name="failure_score")])
    dataset = rg.Dataset(name=f"dates-{uuid.uuid4().hex[:8]}", settings=settings, workspace="argilla", client=client).create()
    before = datetime.utcnow()
    time.sleep(0.01)
    dataset.records.log([rg.Record(id=f"r{i}", fields={"text": f"text {i}"}, metadata={"failure_score": i / 10}) for i in range(6)])
    time.sleep(0.01)
    after = datetime.utcnow()

    def ids(*conditions: tuple) -> list[str]:
        found = dataset.records(query=rg.Query(filter=rg.Filter(list(conditions))))
        return sorted(record.id for record in found)

    everything = [f"r{i}" for i in range(6)]
    for prop in ("inserted_at", "updated_at"):
        assert ids((prop, "<=", datetime.utcnow())) == everything
        assert ids((prop, ">=", datetime.utcnow())) == []
        assert ids((prop, ">=", before)) == everything
        assert ids((prop, "<=", before)) == []
        assert ids((prop, ">=", before), (prop, "<=", after)) == everything
        # With a zone: the same instant in UTC and in +05:30.
        assert ids((prop, ">=", before.replace(tzinfo=timezone.utc))) == everything
        assert ids((prop, "<=", before.replace(tzinfo=timezone.utc).astimezone(timezone(timedelta(hours=5, minutes=30))))) == []
    assert ids(("metadata.failure_score", ">=", 0.3)) == ["r3", "r4", "r5"]
    assert ids(("metadata.failure_score", "<=", 0.1), ("inserted_at", ">=", before)) == ["r0", "r1"]

    def search(bound: dict) -> httpx.Response:
        body = {"filters": {"and": [{"type": "range", "scope": {"entity": "record", "property": "inserted_at"}, **bound}]}}
        return httpx.post(f"{guarded.url}/api/v1/datasets/{dataset.id}/records/search", json=body,
                          headers={"X-Argilla-Api-Key": guarded.api_key})

    millis = before.replace(tzinfo=timezone.utc).timestamp() * 1000
    assert search({"ge": millis}).json()["total"] == 6  # a number is epoch milliseconds
    assert search({"ge": str(int(millis))}).json()["total"] == 6
    assert search({"le": millis}).json()["total"] == 0
    assert search({"le": after.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}).json()["total"] == 6
    assert search({"le": after.date().isoformat()}).json()["total"] == 6  # a date alone: up to the end of that day
    bad = search({"le": "yesterday"})
    assert bad.status_code == 422 and "is not a date" in bad.text


def test_another_argilla_server_version_is_a_clear_error(cli, monkeypatch):
    from annotations.server import app

    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    monkeypatch.setattr(app, "installed_server_version", lambda: "2.9.0")
    result = cli("annotate", "serve", "--port", str(free_port()), code=1)
    assert result.stderr.strip() == (
        "error: the embedded server needs argilla-server 2.8.0 (it patches that version's internals) but "
        "argilla-server 2.9.0 is installed; run: pip install 'argilla-server==2.8.0'")
    monkeypatch.setattr(app, "installed_server_version", lambda: None)
    assert "argilla-server is not installed" in cli("annotate", "serve", "--port", str(free_port()), code=1).stderr
    monkeypatch.setattr(app, "installed_server_version", lambda: app.SERVER_VERSION)
    app.check_server_version()


def test_serve_announces_the_url_and_how_to_log_in_never_a_chosen_secret(home, monkeypatch):
    from annotations.server.app import announcement

    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    monkeypatch.delenv("CURATE_ANNOTATE_OWNER_PASSWORD", raising=False)
    line = announcement(ServerSettings.resolve(home, port=6911))
    assert "http://127.0.0.1:6911" in line
    assert "log in as argilla / 12345678 (Argilla's public default" in line  # the tour's login, printed because public
    monkeypatch.setenv("CURATE_ANNOTATE_OWNER_PASSWORD", "a-chosen-password")
    monkeypatch.setenv("ARGILLA_API_KEY", "a-chosen-key-123")
    line = announcement(ServerSettings.resolve(home, port=6911))
    assert "log in as argilla with the password in $CURATE_ANNOTATE_OWNER_PASSWORD" in line
    assert "a-chosen-password" not in line and "a-chosen-key-123" not in line


def test_a_client_waits_for_the_home_server_while_it_starts_and_finds_its_port(tmp_path, monkeypatch):
    """`curate annotate serve &` then `curate annotate push`: the push waits while the server holds the home's lock
    (it is rebuilding its index), at the address in the lock; with no server starting it gives up as before."""
    from annotations import client

    home, port = tmp_path / "home", free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom annotations.server.lock import hold_server_lock\n"
         "from annotations.server.settings import ServerSettings\n"
         f"lock = hold_server_lock(ServerSettings.resolve({str(home)!r}, port={port}))\nprint('held', flush=True)\ntime.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    for name in ("ARGILLA_API_URL", "ARGILLA_API_KEY", "CURATE_ANNOTATE_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CURATE_ANNOTATE_RETRIES", "1")
    monkeypatch.setattr(client, "STARTING_WAIT_S", 2)
    started = time.monotonic()
    with pytest.raises(client.ServerUnreachable, match=f"127.0.0.1:{port}"):  # not the default 6900: the lock's
        client.connect(home=home)
    assert time.monotonic() - started >= 2
    holder.kill()
    holder.wait()
    started = time.monotonic()
    with pytest.raises(client.ServerUnreachable):
        client.connect(home=home)
    assert time.monotonic() - started < 2
