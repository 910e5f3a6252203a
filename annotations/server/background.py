"""Start the embedded server in a child process and wait until it answers: for tests, the demo and notebooks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from annotations.server.settings import ServerSettings, free_port
from curation.errors import CurateError
from curation.home import open_private

READY_TIMEOUT_S = 180.0


@dataclass
class ServerHandle:
    """A running embedded server. `stop()` sends SIGTERM (a clean shutdown) and waits for the process."""

    url: str
    api_key: str = field(repr=False)
    home: Path
    process: subprocess.Popen = field(repr=False)
    log_path: Path

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """Stop abruptly, as a crash would (for fault tests)."""
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _child_env(settings: ServerSettings) -> dict[str, str]:
    env = dict(os.environ)
    env["ARGILLA_API_KEY"] = settings.api_key
    env["CURATE_ANNOTATE_OWNER_PASSWORD"] = settings.owner_password
    env["CURATE_ANNOTATE_QUEUE_ORDER"] = settings.queue_order
    env["CURATE_ANNOTATE_PRIORITY_FIELD"] = settings.priority_field
    env["CURATE_ANNOTATE_ALLOWED_HOSTS"] = ",".join(settings.allowed_hosts)
    env["CURATE_ANNOTATE_ALLOWED_ORIGINS"] = ",".join(settings.allowed_origins)
    return env


def start_background(home: str | os.PathLike | None = None, port: int | None = None,
                     ready_timeout: float = READY_TIMEOUT_S, **overrides: object) -> ServerHandle:
    """Run `curate annotate serve` for this home in a child process; return once the API answers.

    `port=None` picks a free port. Other keyword arguments override ServerSettings (api_key, owner_password,
    queue_order, …). The child's output goes to HOME/argilla/server.log. A large home takes longer to start:
    the index is rebuilt from the database first (`ready_timeout`).
    """
    settings = ServerSettings.resolve(home, port=port or free_port(), **overrides)
    log_path = settings.ensure_folder() / "server.log"
    command = [sys.executable, "-m", "annotations.server", "serve", "--home", str(settings.home),
               "--host", settings.host, "--port", str(settings.port), "--log-level", "info"]
    with open_private(log_path) as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_child_env(settings))
    handle = ServerHandle(settings.url, settings.api_key, settings.home, process, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise CurateError(f"the Argilla server exited with code {process.returncode}: {tail[0]}")
        try:
            response = httpx.get(f"{settings.url}/api/v1/me", headers={"X-Argilla-Api-Key": settings.api_key}, timeout=2)
            if response.status_code == 200:
                return handle
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    handle.stop()
    raise CurateError(f"the Argilla server did not answer within {ready_timeout:.0f}s; see {log_path}")


def add_user(home: str | os.PathLike | None, name: str, role: str = "annotator", password: str = "",
             workspaces: list[str] | None = None) -> dict:
    """Create or update a user of the embedded server (running or not). Returns {"user","role","workspaces","created"}."""
    settings = ServerSettings.resolve(home)
    command = [sys.executable, "-m", "annotations.server", "add-user", name, "--home", str(settings.home), "--role", role]
    for workspace in workspaces or []:
        command += ["--workspace", workspace]
    env = {**os.environ, "CURATE_USER_PASSWORD": password}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error: ")]
        raise CurateError(lines[-1][len("error: "):] if lines else f"adding user {name!r} failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
