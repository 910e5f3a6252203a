"""`--engine` and `--ray-address`, shared by the commands whose per-conversation work can run on Ray."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import click

from curation.cli.common import fail


def engine_options(func: Callable) -> Callable:
    """Add `--engine local|ray` and `--ray-address` (curate.toml [engine], env CURATE_ENGINE_KIND / _ADDRESS)."""
    func = click.option(
        "--ray-address", "--address", "ray_address", default=None, metavar="auto|ray://HOST:PORT",
        help="Ray cluster for --engine ray: auto (the one `ray start` runs on this machine) or ray://HOST:10001; "
             "default: $RAY_ADDRESS, else a Ray instance started on this machine (env CURATE_ENGINE_ADDRESS, "
             "curate.toml [engine] address).")(func)
    return click.option(
        "--engine", type=click.Choice(["local", "ray"]), default=None,
        help="local (default): this process; ray: workers on a Ray cluster, one per CPU (or GPU), which needs the "
             "PostgreSQL store (CURATE_DATABASE_URL) and pip install 'curate[ray]' (env CURATE_ENGINE_KIND, "
             "curate.toml [engine] kind; docs/scale.md).")(func)


@contextlib.contextmanager
def engine_usage() -> Iterator[None]:
    """An engine that cannot run with this store is a usage error: one line, exit 2."""
    from curation.engine import EngineUsageError

    try:
        yield
    except EngineUsageError as exc:
        fail(str(exc), code=2)
