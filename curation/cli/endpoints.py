"""Options and settings shared by the commands that call chat endpoints (`generate`, `judge`)."""
from __future__ import annotations

from typing import Any, Callable

import click


def endpoint_options(section: str) -> Callable:
    """--url/--model (one endpoint instead of curate.toml [[SECTION.endpoints]]) and the run's bounds."""
    options = [
        click.option("--url", default=None, help=f"One endpoint's API base URL instead of curate.toml [[{section}.endpoints]]."),
        click.option("--model", default=None, help="The model name to request from --url."),
        click.option("--concurrency", type=click.IntRange(1), default=None, help="Requests in flight at once (default 8)."),
        click.option("--max-requests", type=click.IntRange(0), default=None, help="Cap on requests in this run, retries included."),
        click.option("--max-total-tokens", type=click.IntRange(0), default=None, help="Cap on tokens in this run."),
        click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None, help="Seconds per request (default 60)."),
    ]

    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def endpoint_settings(cls: Any, home: str | None, url: str | None, model: str | None, **overrides: Any) -> Any:
    """`cls` (an EndpointSettings) from curate.toml with the command line's overrides; `url` + `model` replace the
    file's endpoints, with the section's endpoint defaults."""
    from curation.config import resolve_home
    from curation.endpoints import Endpoint, check_endpoint

    if bool(url) != bool(model):
        raise click.UsageError(f"give both the endpoint's URL and its model name, or neither (then curate.toml [{cls.SECTION}])")
    endpoints = None
    if url:
        endpoints = [check_endpoint(Endpoint(url=url, model=model, **cls.ENDPOINT_DEFAULTS), "the command-line endpoint")]
    return cls.resolve(resolve_home(home), endpoints=endpoints, **overrides).require_endpoints()
