"""`curate annotate push|pull|status`: route conversations to Argilla, bring ratings home, show progress."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports

dataset_option = click.option("--dataset", required=True, help="Argilla dataset name (created by the first push).")
workspace_option = click.option("--workspace", default=None, help="Argilla workspace (default: argilla).")


@click.command()
@dataset_option
@click.option("--budget", type=click.IntRange(1), default=None,
              help="How many conversations to choose (by --strategy) and send as new records; those already in the "
                   "dataset are never chosen again. After a push that was cut off, the same command sends only what "
                   "it still owed.")
@click.option("--ids", multiple=True, help="Route exactly these conversation ids (repeat, or separate with commas).")
@click.option("--strategy", type=click.Choice(["failure", "random"]), default="failure", show_default=True,
              help="failure: highest failure scores spread over clusters + 20% exploration; random: uniform sample.")
@click.option("--min-submitted", type=click.IntRange(1), default=1, show_default=True,
              help="Annotators per record before it counts as done (2+ for agreement studies).")
@click.option("--pairs", is_flag=True,
              help="Show a sibling reply (same context) as response B and ask for a preference (HelpSteer2-Preference).")
@click.option("--generate", "use_generator", is_flag=True,
              help="With --pairs: conversations without a sibling first get a generated candidate as response B "
                   "(endpoints from curate.toml [[generate.endpoints]]).")
@click.option("--generate-url", default=None, help="One generation endpoint's API base URL (implies --generate).")
@click.option("--generate-model", default=None, help="The model name to request from --generate-url.")
@click.option("--generate-api-key-env", default=None, metavar="NAME",
              help="The environment variable holding --generate-url's API key (sent as a Bearer token; never stored).")
@click.option("--suggestions", type=click.Choice(["judge", "reward", "none"]), default="judge", show_default=True,
              help="Pre-fill the ratings from the LLM judge where a conversation has a judgement (else the reward "
                   "model), from the reward model only, or not at all.")
@workspace_option
@home_option
@json_option
@reports
def push(dataset, budget, ids, strategy, min_submitted, pairs, use_generator, generate_url, generate_model,
         generate_api_key_env, suggestions, workspace, home, as_json):
    """Send conversations to Argilla as HelpSteer2 rating tasks, PII redacted. Idempotent and resumable."""
    from annotations.push import push as run_push
    from curation.store import Store

    generator = None
    if generate_api_key_env and not generate_url:
        raise click.UsageError("--generate-api-key-env names the key variable of --generate-url; give --generate-url "
                               "and --generate-model with it")
    if use_generator or generate_url or generate_model:
        from annotations.generate import Generator
        from curation.cli.generate import generate_settings

        if not pairs:
            raise click.UsageError("--generate writes response B of a pair: add --pairs")
        generator = Generator(generate_settings(home, generate_url, generate_model, generate_api_key_env))
    wanted = [i for chunk in ids for i in chunk.split(",") if i] or None
    result = run_push(Store.open(home), dataset, budget=budget, ids=wanted,
                      strategy=strategy, workspace=workspace, min_submitted=min_submitted, pairs=pairs,
                      generator=generator, suggestions=suggestions)
    shares = ", ".join(f"{k} {v}" for k, v in sorted(result["by_strategy"].items()))
    text = f"pushed {result['pushed']:,} records to {dataset!r} at {result['url']} ({shares or 'none new'}); skipped {result['skipped']:,}"
    if generator is not None:
        from curation.cli.generate import human

        text += "\n" + human(result["generation"])
    return result, text


@click.command()
@dataset_option
@workspace_option
@home_option
@json_option
@reports
def pull(dataset, workspace, home, as_json):
    """Store new and changed responses, update the consensus ratings, and report agreement."""
    from annotations.pull import pull as run_pull
    from curation.store import Store

    result = run_pull(Store.open(home), dataset, workspace=workspace)
    return result, _human_pull(result)


@click.command()
@dataset_option
@workspace_option
@home_option
@json_option
@reports
def status(dataset, workspace, home, as_json):
    """Progress per dataset and per annotator (server and store)."""
    from annotations.pull import status as run_status
    from curation.store import Store

    result = run_status(Store.open(home), dataset, workspace=workspace)
    return result, _human_status(result)


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:5.2f}"


def _human_pull(r: dict) -> str:
    a = r["agreement"]
    lines = [f"{r['pulled']:,} records with new responses, {r['responses']:,} new submitted responses",
             f"agreement over {a['records']:,} records ({a['multi_annotated']:,} with 2+ annotators, "
             f"{a['disagreement']:,} flagged):",
             "  attribute      kappa  alpha   (after spread filter: kappa  alpha)"]
    for name, before in a["before_filter"]["attributes"].items():
        after = a["after_filter"]["attributes"][name]
        lines.append(f"  {name:<13} {_fmt(before['kappa'])}  {_fmt(before['alpha'])}"
                     f"                        {_fmt(after['kappa'])}  {_fmt(after['alpha'])}")
    b, f = a["before_filter"]["overall"], a["after_filter"]["overall"]
    lines.append(f"  {'overall':<13} {_fmt(b['kappa'])}  {_fmt(b['alpha'])}                        {_fmt(f['kappa'])}  {_fmt(f['alpha'])}")
    for name, s in a["annotators"].items():
        lines.append(f"  {name}: {s['count']:,} responses, mean offset {_fmt(s['mean_offset'])}")
    return "\n".join(lines)


def _human_status(r: dict) -> str:
    s = r["store"]
    if r.get("server_error"):
        head = f"server: {r['server_error']}"
    else:
        head = f"{r['dataset']}: {r['completed']:,} of {r['total']:,} records completed, {r['pending']:,} pending"
    lines = [head, f"store: {s['pushed']:,} pushed, {s['rated']:,} rated ({s['disagreement']:,} flagged), last pull {s['last_pull'] or 'never'}"]
    for name, counts in sorted(r["annotators"].items()):
        lines.append(f"  {name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    return "\n".join(lines)


COMMANDS = [push, pull, status]
