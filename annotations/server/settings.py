"""Settings of the embedded Argilla server, and the environment that argilla-server reads them from.

Precedence: CLI option > environment > `[annotate.server]` in curate.toml > default. Secrets (the owner's
password and API key, annotators' passwords) come from the environment or the config file and are never printed.
"""
from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from curation.collect.auth import is_loopback
from curation.config import layered, load_config_file, resolve_home
from curation.errors import ConfigError
from curation.home import ensure_home, private_dir

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6900
# Argilla's own well-known defaults: fine on a laptop, refused on a network interface.
DEFAULT_API_KEY = "argilla.apikey"
DEFAULT_PASSWORD = "12345678"
DEFAULT_WORKSPACE = "argilla"
QUEUE_ORDERS = ("priority", "random", "inserted")

# field name -> environment variable
_ENV = {
    "host": "CURATE_ANNOTATE_HOST",
    "port": "CURATE_ANNOTATE_PORT",
    "owner": "CURATE_ANNOTATE_OWNER",
    "owner_password": "CURATE_ANNOTATE_OWNER_PASSWORD",
    "api_key": "ARGILLA_API_KEY",
    "queue_order": "CURATE_ANNOTATE_QUEUE_ORDER",
    "priority_field": "CURATE_ANNOTATE_PRIORITY_FIELD",
    "allowed_hosts": "CURATE_ANNOTATE_ALLOWED_HOSTS",
    "allowed_origins": "CURATE_ANNOTATE_ALLOWED_ORIGINS",
}
LISTS = ("allowed_hosts", "allowed_origins")  # comma-separated in the environment


@dataclass
class ServerSettings:
    """How `curate annotate serve` runs; see docs/annotation-server.md."""

    home: Path = field(default_factory=resolve_home, metadata={"help": "Curate home; the server keeps its state in HOME/argilla/"})
    host: str = field(default=DEFAULT_HOST, metadata={"help": "interface to bind (loopback by default)"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "TCP port"})
    owner: str = field(default="argilla", metadata={"help": "owner user name"})
    owner_password: str = field(default=DEFAULT_PASSWORD, repr=False, metadata={"help": "owner password (env CURATE_ANNOTATE_OWNER_PASSWORD)"})
    api_key: str = field(default=DEFAULT_API_KEY, repr=False, metadata={"help": "owner API key (env ARGILLA_API_KEY)"})
    queue_order: str = field(default="priority", metadata={"help": "unsorted queue order: priority | random (Argilla's) | inserted"})
    priority_field: str = field(default="failure_score", metadata={"help": "metadata property that orders the priority queue"})
    allowed_hosts: list[str] = field(default_factory=list, metadata={"help": "other names the server answers to, NAME or NAME:PORT (a reverse proxy's name); the bound address always works"})
    allowed_origins: list[str] = field(default_factory=list, metadata={"help": "other web origins (https://tool.example) whose pages may call the API; the server's own always may"})
    users: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, metadata={"help": "[annotate.users.NAME] role, password_env"})

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None, **overrides: Any) -> "ServerSettings":
        home_path = resolve_home(home)
        config = load_config_file(home_path).get("annotate", {})
        names = sorted({f.name for f in fields(cls)} - {"home", "users"})
        values = layered(config.get("server", {}), "annotate.server", names, _ENV, overrides)
        settings = cls(home=home_path, users=dict(config.get("users", {})), **values)
        try:
            settings.port = int(settings.port)
        except (TypeError, ValueError):
            settings.port = -1
        if not 1 <= settings.port <= 65535:
            raise ConfigError(f"port {values.get('port')!r} (curate.toml [annotate.server] port or {_ENV['port']}): "
                              "use a TCP port from 1 to 65535")
        for name in LISTS:
            value = getattr(settings, name)
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                raise ConfigError(f"[annotate.server] {name}: give a list of strings, like [\"tool.example\"]")
            setattr(settings, name, [item.strip().lower() for item in items if item.strip()])
        if settings.queue_order not in QUEUE_ORDERS:
            raise ConfigError(f"queue order {settings.queue_order!r}: use one of {', '.join(QUEUE_ORDERS)}")
        return settings

    @property
    def folder(self) -> Path:
        return self.home / "argilla"

    def ensure_folder(self) -> Path:
        """HOME/argilla/, created 0700: its database holds every user's API key in plain text."""
        ensure_home(self.home)
        private_dir(self.folder)
        return self.folder

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def uses_defaults(self) -> list[str]:
        out = []
        if self.api_key == DEFAULT_API_KEY:
            out.append("API key (set ARGILLA_API_KEY)")
        if self.owner_password == DEFAULT_PASSWORD:
            out.append("owner password (set CURATE_ANNOTATE_OWNER_PASSWORD)")
        return out

    def check_exposure(self) -> None:
        """Refuse a non-loopback interface while anyone who knows Argilla's defaults could log in."""
        defaults = self.uses_defaults()
        if defaults and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {self.host} with the default {' and '.join(defaults)}; "
                "set them, or serve on 127.0.0.1"
            )
        if len(self.api_key) < 8 or len(self.owner_password) < 8:
            raise ConfigError("the owner API key and password need at least 8 characters each")

    def auth_secret(self) -> str:
        """The key that signs login tokens, kept in HOME/argilla/auth-secret so logins survive a restart."""
        path = self.folder / "auth-secret"
        if not path.exists():
            self.ensure_folder()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
        return path.read_text().strip()

    def environment(self) -> dict[str, str]:
        """The variables argilla-server reads at import time, for a process that will serve this home."""
        folder = self.folder.resolve()
        return {
            "ARGILLA_HOME_PATH": str(folder),
            "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'argilla.db'}?check_same_thread=False",
            "ARGILLA_SEARCH_ENGINE": "curate",
            # SQLite's busy timeout: under a team's writes on a busy machine, argilla-server's 5 s made submissions
            # fail with "database is locked"
            "ARGILLA_DATABASE_SQLITE_TIMEOUT": "30",
            "ARGILLA_AUTH_SECRET_KEY": self.auth_secret(),
            "ARGILLA_AUTH_OAUTH_CFG": str(folder / "oauth.yaml"),
            "ARGILLA_CORS_ORIGINS": "[]",  # annotations.server.guard decides which origins get CORS headers
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "1",
            "CURATE_ANNOTATE_QUEUE_ORDER": self.queue_order,
            "CURATE_ANNOTATE_PRIORITY_FIELD": self.priority_field,
        }


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
