"""`curate judge`: rate conversations HelpSteer2-style with an LLM judge (OpenAI-compatible endpoints)."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports
from curation.cli.endpoints import endpoint_options, endpoint_settings

KEYS = ("judged", "cached", "failed", "unparseable", "requests", "tokens", "status", "run_id")


def human(result: dict) -> str:
    line = (f"judged {result['judged']:,} conversations ({result['cached']:,} cached, {result['failed']:,} failed, "
            f"{result['unparseable']:,} unparseable answers, {result['capped']:,} left by a cap; "
            f"{result['requests']:,} requests, {result['tokens']:,} tokens; rubric {result['rubric_version']}): "
            f"{result['status']}")
    from curation.endpoints.runner import notes

    return "\n".join([line, *notes(result)])


@click.command()
@click.option("--ids", multiple=True, help="Judge exactly these conversation ids (repeat, or separate with commas).")
@click.option("--budget", type=click.IntRange(0), default=None,
              help="Judge the N not-yet-judged conversations most likely to be failures.")
@click.option("--all", "every", is_flag=True, help="Judge every conversation that has a reply.")
@endpoint_options("judge")
@home_option
@json_option
@reports
def judge(ids, budget, every, url, model, concurrency, max_requests, max_total_tokens, timeout, home, as_json):
    """Rate conversations' last replies on HelpSteer2's five attributes (0–4) with an LLM judge.

    Endpoints come from curate.toml [[judge.endpoints]] (url, model, api_key_env, temperature (default 0),
    max_tokens, name), or --url and --model. Judgements are cached by (conversation content, judge model, rubric
    version): a rerun asks nothing. They are stored apart from human ratings and never used as labels. PII is
    redacted before anything is sent (see docs/judge.md). Exits 1 when nothing could be judged.
    """
    from annotations.pii import Redactor
    from curation.judge.config import JudgeSettings
    from curation.judge.run import Judge
    from curation.store import Store

    wanted = [i for chunk in ids for i in chunk.split(",") if i] or None
    if sum(x is not None and x is not False for x in (wanted, budget, every)) != 1:
        raise click.UsageError("say what to judge: --budget N, --ids ID... or --all (one of them)")
    settings = endpoint_settings(JudgeSettings, home, url, model, concurrency=concurrency, max_requests=max_requests,
                                 max_total_tokens=max_total_tokens, timeout=timeout)
    result = Judge(settings, redact=Redactor().redact).judge(Store.open(home), ids=wanted, budget=budget,
                                                             every=every)
    if result["failed"] and not result["judged"]:
        result["status"] = "failed"
        first = next(iter(result["errors"].items()), ("the judge", "failed"))
        return result, human(result), f"nothing judged: {first[0]}: {first[1]}"
    return result, human(result)
