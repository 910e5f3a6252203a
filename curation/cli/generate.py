"""`curate generate`: candidate responses from OpenAI-compatible endpoints for routed conversations (no push)."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports
from curation.errors import CurateError


def generate_settings(home: str | None, url: str | None, model: str | None, api_key_env: str | None = None,
                      **overrides):
    """curate.toml `[generate]` with the command line's overrides; `url` + `model` (+ `api_key_env`) replace its
    endpoints."""
    from annotations.generate.config import Endpoint, GenerateSettings, check_endpoint
    from curation.config import resolve_home

    if bool(url) != bool(model):
        raise click.UsageError("give both the endpoint's URL and its model name, or neither (then curate.toml [generate])")
    if api_key_env and not url:
        raise click.UsageError("--api-key-env names the key variable of --url; give --url and --model with it")
    endpoint = Endpoint(url=url, model=model, api_key_env=api_key_env or "") if url else None
    endpoints = [check_endpoint(endpoint, "the command-line endpoint")] if endpoint else None
    return GenerateSettings.resolve(resolve_home(home), endpoints=endpoints, **overrides).require_endpoints()


def human(result: dict) -> str:
    line = (f"generated {result['generated']:,} candidates for {result['conversations']:,} conversations "
            f"({result['existing']:,} already there, {result['failed']:,} failed, {result['capped']:,} left by a cap; "
            f"{result['requests']:,} requests, {result['tokens']:,} tokens): {result['status']}")
    notes = [f"  {k}: {v}" for k, v in result["errors"].items()]
    if result.get("cap"):
        notes.append(f"  stopped at the per-run {result['cap']} cap")
    return "\n".join([line, *notes])


@click.command()
@click.option("--ids", multiple=True, help="Generate for exactly these conversation ids (repeat, or separate with commas).")
@click.option("--budget", type=click.IntRange(1), default=None,
              help="Generate for the N conversations a push would route next (those with a sibling are left out).")
@click.option("--dataset", default=None,
              help="With --budget: choose as a push into this dataset would (default: among conversations not routed anywhere).")
@click.option("--strategy", type=click.Choice(["failure", "random"]), default="failure", show_default=True,
              help="Routing strategy used with --budget.")
@click.option("--url", default=None, help="One endpoint's API base URL instead of curate.toml [[generate.endpoints]].")
@click.option("--model", default=None, help="The model name to request from --url.")
@click.option("--api-key-env", default=None, metavar="NAME",
              help="The environment variable holding --url's API key (sent as a Bearer token; never stored).")
@click.option("--concurrency", type=click.IntRange(1), default=None, help="Requests in flight at once (default 8).")
@click.option("--max-requests", type=click.IntRange(0), default=None, help="Cap on requests in this run, retries included.")
@click.option("--max-total-tokens", type=click.IntRange(0), default=None, help="Cap on tokens in this run.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None, help="Seconds per request (default 60).")
@home_option
@json_option
@reports
def generate(ids, budget, dataset, strategy, url, model, api_key_env, concurrency, max_requests, max_total_tokens,
             timeout, home, as_json):
    """Write candidate replies to routed conversations, stored as generated siblings for `annotate push --pairs`.

    Endpoints come from curate.toml [[generate.endpoints]] (url, model, api_key_env, temperature, max_tokens, n),
    or --url and --model. Resumable: a rerun asks only for the candidates still missing. Exits 1 when every
    request failed; a run with some failures or stopped by a cap reports status "partial".
    """
    from annotations.generate import generate as run_generate
    from curation.store import Store

    wanted = [i for chunk in ids for i in chunk.split(",") if i] or None
    if (budget is None) == (wanted is None):
        raise click.UsageError("say what to generate for: --budget N (routing chooses) or --ids ID... (exactly these)")
    settings = generate_settings(home, url, model, api_key_env, concurrency=concurrency, max_requests=max_requests,
                                 max_total_tokens=max_total_tokens, timeout=timeout)
    result = run_generate(Store.open(home), ids=wanted, budget=budget, dataset=dataset, strategy=strategy,
                          settings=settings)
    if result["failed"] and not result["generated"] and not result["existing"]:
        first = next(iter(result["errors"].items()), ("the endpoint", "failed"))
        raise CurateError(f"no candidate generated: {first[0]}: {first[1]}")
    return result, human(result)
