"""Run argilla-server 2.8.0 in this process: SQLite under HOME/argilla/, Curate's search engine, no Redis.

argilla-server reads its settings from the environment and builds its app and database engines when it is first
imported, so `configure()` sets the environment and installs the in-process job queues before that import.
A process serves one home; `background.start_background` and the CLI start a fresh process for each.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import signal
import sys
from typing import Callable

from annotations.server import jobs
from annotations.server.guard import AccessPolicy, guard
from annotations.server.lock import hold_server_lock
from annotations.server.settings import DEFAULT_API_KEY, DEFAULT_PASSWORD, ServerSettings, port_is_free
from curation.errors import CurateError
from curation.home import create_private

_LOGGER = logging.getLogger("curate.argilla")
# The engine, the bulk path and the patches below use argilla-server's internals as they are in this version.
SERVER_VERSION = "2.8.0"


def installed_server_version() -> str | None:
    try:
        return importlib.metadata.version("argilla-server")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_server_version() -> None:
    """Raise CurateError unless the installed argilla-server is SERVER_VERSION."""
    found = installed_server_version()
    if found != SERVER_VERSION:
        what = f"argilla-server {found} is installed" if found else "argilla-server is not installed"
        raise CurateError(f"the embedded server needs argilla-server {SERVER_VERSION} (it patches that version's "
                          f"internals) but {what}; run: pip install 'argilla-server=={SERVER_VERSION}'")


def configure(settings: ServerSettings) -> None:
    """Point argilla-server at this home. Must run before anything imports `argilla_server`."""
    check_server_version()
    env = settings.environment()
    if "argilla_server" in sys.modules:
        if os.environ.get("ARGILLA_HOME_PATH") != env["ARGILLA_HOME_PATH"]:
            raise CurateError(
                "this Python process already serves another Argilla home; run the command in a fresh process"
            )
        return
    # SQLite creates the database, and later its journal, with the mode of the file it finds: keys stay 0600.
    create_private(settings.ensure_folder() / "argilla.db")
    os.environ.update(env)
    jobs.install()


def migrate() -> None:
    """Bring argilla-server's database to its head revision with its own Alembic scripts."""
    from alembic import command
    from alembic.config import Config

    from argilla_server.database import ALEMBIC_CONFIG_FILE

    # No config file name: argilla's env.py would otherwise run logging.fileConfig and silence our loggers.
    config = Config()
    config.set_main_option("script_location", os.path.join(os.path.dirname(ALEMBIC_CONFIG_FILE), "alembic"))
    command.upgrade(config, "head")
    write_ahead_log()


def write_ahead_log() -> None:
    """Put argilla.db in WAL mode (it stays so): readers no longer block the writer, nor the writer them, and a
    commit is one append to the log. In the default rollback-journal mode a team of annotators saw "database is
    locked" (HTTP 500) on submissions, each commit waiting for every reader. Durability is unchanged: a committed
    response survives `kill -9` (synchronous stays FULL, SQLite's default)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(os.path.join(os.environ["ARGILLA_HOME_PATH"], "argilla.db"))) as db:
        db.execute("PRAGMA journal_mode=WAL")


async def _prepare(settings: ServerSettings) -> None:
    from annotations.server.users import ensure_config_users, ensure_owner
    from argilla_server.database import async_engine

    await ensure_owner(settings)
    await ensure_config_users(settings)
    # The pooled connections belong to this short-lived loop; the server opens its own.
    await async_engine.dispose()


MEMBERSHIP_TTL_S = 2.0


def cache_membership() -> None:
    """Remember workspace membership for a moment.

    For an annotator, argilla-server checks membership once per metadata value of every record it returns (a
    database query each: 60 for one UI page of 10 records with 6 metadata values), which made the queue page the
    slowest request. Membership changes reach the cache within MEMBERSHIP_TTL_S seconds.
    """
    import time

    from argilla_server.models import User

    original = User.is_member
    if getattr(original, "_curate_cached", False):
        return
    seen: dict[tuple, tuple[float, bool]] = {}

    async def is_member(self, workspace_id) -> bool:
        key, now = (self.id, workspace_id), time.monotonic()
        hit = seen.get(key)
        if hit is not None and now - hit[0] < MEMBERSHIP_TTL_S:
            return hit[1]
        answer = await original(self, workspace_id)
        seen[key] = (now, answer)
        return answer

    is_member._curate_cached = True
    User.is_member = is_member


def cache_settings_validation() -> None:
    """Validate question and metadata settings with one pydantic TypeAdapter each, and once per settings value.

    argilla-server 2.8.0 builds a `TypeAdapter` on every `parsed_settings` access (about 7 ms each), and its record and
    response validators access it several times per record: most of the server's time on a bulk push. The parsed
    value is kept on the instance next to a copy of the settings it came from, so a changed setting is parsed again.
    """
    import copy

    from argilla_server.models import MetadataProperty, Question
    from argilla_server.models.metadata_properties import MetadataPropertySettings
    from argilla_server.api.schemas.v1.questions import QuestionSettings
    from pydantic import TypeAdapter

    if getattr(Question.parsed_settings.fget, "_curate_cached", False):
        return

    def parsed(adapter: TypeAdapter) -> property:
        def get(self):
            raw, memo = self.settings, self.__dict__.get("_curate_parsed_settings")
            if memo is None or memo[0] != raw:
                memo = self.__dict__["_curate_parsed_settings"] = (copy.deepcopy(raw), adapter.validate_python(raw))
            return memo[1]

        get._curate_cached = True
        return property(get)

    Question.parsed_settings = parsed(TypeAdapter(QuestionSettings))
    MetadataProperty.parsed_settings = parsed(TypeAdapter(MetadataPropertySettings))


def skip_events_without_webhooks() -> None:
    """Build record and response webhook events only when an enabled webhook will receive them.

    The server assembles each event (several queries and a full record serialisation) before it looks for
    subscribers; with no webhook that work is thrown away, once per record of every bulk upsert.
    """
    import importlib

    from argilla_server.contexts.webhooks import list_enabled_webhooks

    def guarded(notify):
        if getattr(notify, "_curate_guarded", False):
            return notify

        async def notify_if_subscribed(db, *args, **kwargs):
            if not await list_enabled_webhooks(db):
                return []
            return await notify(db, *args, **kwargs)

        notify_if_subscribed._curate_guarded = True
        return notify_if_subscribed

    for module_name, attrs in (("argilla_server.bulk.records_bulk", ("notify_record_event_v1",)),
                               ("argilla_server.contexts.records", ("notify_record_event_v1",)),
                               ("argilla_server.contexts.distribution", ("notify_record_event_v1",)),
                               ("argilla_server.contexts.datasets", ("notify_record_event_v1", "notify_response_event_v1"))):
        module = importlib.import_module(module_name)
        for attr in attrs:
            setattr(module, attr, guarded(getattr(module, attr)))


def prepare(settings: ServerSettings) -> None:
    """Configure, migrate, and make the owner and the configured users match the settings (idempotent)."""
    configure(settings)
    migrate()
    import annotations.server.search  # registers the "curate" search engine

    from annotations.server import bulk, full_disk, one_hop, responses, writes

    cache_membership()
    cache_settings_validation()
    skip_events_without_webhooks()
    bulk.install()
    responses.install()
    writes.install()
    writes.shorten_response_writes()
    one_hop.install()
    full_disk.install()
    asyncio.run(_prepare(settings))


def serve(settings: ServerSettings, log_level: str = "warning", announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM. Raises CurateError when the port is taken, the host is unsafe, another server
    serves this home, or argilla-server is not the version the patches were written for.

    `announce` receives one line (the URL and where the key comes from, never the key) once the server is set up.
    """
    settings.check_exposure()
    check_server_version()
    policy = AccessPolicy(settings)
    with hold_server_lock(settings):  # released when serving ends, or by the kernel if the process dies
        _serve_locked(settings, policy, log_level, announce)


def _serve_locked(settings: ServerSettings, policy: AccessPolicy, log_level: str, announce: Callable[[str], None] | None) -> None:
    if not port_is_free(settings.host, settings.port):
        raise CurateError(
            f"port {settings.port} on {settings.host} is already in use; stop what runs there or pass --port"
        )
    prepare(settings)
    import uvicorn

    from annotations.server.bulk import honour_prefer_minimal
    from argilla_server._app import app

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_server_noise()
    plain_lines(log_level)
    config = uvicorn.Config(guard(honour_prefer_minimal(app), policy), host=settings.host, port=settings.port, log_level=log_level, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if announce is not None:
        announce(announcement(settings))
    # uvicorn installs SIGINT/SIGTERM handlers that finish open requests and run the lifespan shutdown, then
    # re-raises the signal to the handlers it found; these make that a normal exit (code 0) instead of a crash.
    signal.signal(signal.SIGINT, _stopped)
    signal.signal(signal.SIGTERM, _stopped)
    server.run()
    if not server.started:
        raise CurateError(f"the Argilla server could not start on {settings.host}:{settings.port}; see the log above")


def quiet_server_noise() -> None:
    """Silence what argilla-server says at every start or push that is nothing for our users to act on: its warning
    about the default login (`announcement` says it once, with how to change it), and SQLAlchemy's note that a bulk
    upsert's Record is not in the ORM session (the records are written by the bulk statement, not the session)."""
    import warnings

    from sqlalchemy.exc import SAWarning

    logging.getLogger("argilla").addFilter(lambda record: "default credentials" not in record.getMessage())
    warnings.filterwarnings("ignore", message=r"Object of type <Record> not in session", category=SAWarning)


def plain_lines(log_level: str) -> None:
    """Curate's own server messages (a full disk, a write that waited too long) as one plain line each on stderr,
    greppable in a log file: argilla-server's rich handler would wrap them over several lines."""
    if _LOGGER.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    _LOGGER.addHandler(handler)
    _LOGGER.setLevel(getattr(logging, log_level.upper(), logging.WARNING))
    _LOGGER.propagate = False


def announcement(settings: ServerSettings) -> str:
    """What `serve` prints once it is set up: the URL and how to log in. A password or key is printed only when it
    is Argilla's public default; otherwise the line says where it comes from."""
    key = "Argilla's default key, loopback only" if settings.api_key == DEFAULT_API_KEY else "$ARGILLA_API_KEY"
    if settings.owner_password == DEFAULT_PASSWORD:
        login = (f"log in as {settings.owner} / {DEFAULT_PASSWORD} (Argilla's public default; "
                 "set CURATE_ANNOTATE_OWNER_PASSWORD to change it)")
    else:
        login = (f"log in as {settings.owner} with the password in $CURATE_ANNOTATE_OWNER_PASSWORD "
                 "(or curate.toml [annotate.server] owner_password)")
    return f"Argilla for {settings.home} at {settings.url}: {login}; API key: {key}. Ctrl+C stops it"


def _stopped(signum: int, frame: object) -> None:
    _LOGGER.info("stopped by signal %d", signum)


def add_user(settings: ServerSettings, name: str, role: str, password: str, workspaces: list[str] | None = None) -> dict:
    from annotations.server.users import add_user as _add_user

    # Only the database: the owner's key and password are the server's business (this process may not know them).
    configure(settings)
    migrate()

    async def run() -> dict:
        from argilla_server.database import async_engine

        try:
            return await _add_user(name, role, password, workspaces)
        finally:
            await async_engine.dispose()

    return asyncio.run(run())


__all__ = ["add_user", "cache_membership", "configure", "migrate", "prepare", "serve"]
