"""Shared fixtures: a fresh Curate home per test, the store on SQLite or PostgreSQL, the CLI, the real data.

The suite runs against SQLite by default. `make test` then runs it again with `CURATE_TEST_BACKEND=postgresql` and
`CURATE_TEST_DATABASE_URL=postgresql+psycopg://…` (a server that scripts/test-postgres.sh starts): in that pass every
test that touches the store gets its own PostgreSQL schema, and tests that never open a store are not repeated.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Exported int8 models are cached once per machine (~/.cache/curate); the suite keeps its own cache, shared by every
# test of one run (subprocesses included), so it neither reads nor fills the user's.
if "CURATE_CACHE_DIR" not in os.environ:
    os.environ["CURATE_CACHE_DIR"] = tempfile.mkdtemp(prefix="curate-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CURATE_CACHE_DIR"], True)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
PG_URL = os.environ.get("CURATE_TEST_DATABASE_URL") if os.environ.get("CURATE_TEST_BACKEND") == "postgresql" else None

# Area fixtures live beside their tests; list each module here once.
pytest_plugins: list[str] = ["tests.fixtures_argilla"]


def pytest_report_header(config):
    return (f"curate store backend: {'postgresql' if PG_URL else 'sqlite'}; "
            f"embedding backend: {os.environ.get('CURATE_EMBED_BACKEND') or 'auto (depends on this CPU)'}")


def pytest_collection_modifyitems(config, items):
    """PostgreSQL pass: every test that opens a store, except the long end-to-end, fault and browser tests (marked
    slow or browser) whose store code the fast tests already run on PostgreSQL; `pg` opts a slow test back in."""
    if not PG_URL:
        return

    def wanted(item) -> bool:
        if "database_url" not in getattr(item, "fixturenames", ()):
            return False
        long = item.get_closest_marker("slow") or item.get_closest_marker("browser")
        return not long or item.get_closest_marker("pg") is not None

    keep = [item for item in items if wanted(item)]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture(scope="session")
def ray_home(tmp_path_factory) -> Path:
    """The one HOME of every Ray process the tests start: Ray 2.60 writes HOME/.ray/auth_token at a local
    `ray.init()` and a driver keeps the token it read, so every Ray test of a session must see the same file (and
    none may be left in the user's home)."""
    return tmp_path_factory.mktemp("ray-home")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "oasst1-en-validation").is_dir():
        pytest.fail(f"the real data is expected at {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture
def instrumented(monkeypatch):
    """OpenTelemetry's OpenAI instrumentation, recording message content on the spans; yields (provider, the
    in-memory exporter). Shared by the otel ingest and collect tests."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


@pytest.fixture
def oasst_file(shared_data: Path) -> Path:
    return shared_data / "oasst1-en-validation" / "oasst1-en-validation.jsonl"


@pytest.fixture
def database_url() -> str | None:
    """None for SQLite in the home folder; a fresh PostgreSQL schema per test otherwise."""
    if not PG_URL:
        yield None
        return
    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("CURATE_HOME", str(path))
    if database_url:
        monkeypatch.setenv("CURATE_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("CURATE_DATABASE_URL", raising=False)
    return path


@pytest.fixture
def store(home: Path):
    from curation.store import Store

    s = Store.open(home)
    yield s
    s.dispose()


class Cli:
    """Runs `curate …` in-process and parses `--json` output."""

    def __init__(self, home: Path):
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, input: str | None = None):
        from curation.cli.main import cli

        result = self.runner.invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
        assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        return result

    def json(self, *args: str, code: int = 0) -> dict:
        result = self(*args, "--json", code=code)
        return orjson.loads(result.stdout)


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A real small file system (tmpfs of `size`, e.g. "3m") mounted at `folder`, for full-disk tests; skips the
    test where mounting is not allowed (not root, or no tmpfs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)

