"""The loop's `judge` step (after embed): the LLM judge rates the conversations it has not judged yet.

Off unless judge endpoints are configured: the loop file's `[judge]`, else curate.toml's. Cached judgements cost
nothing, so each run asks only about new traffic; `[judge] max_requests` bounds what one run may spend. A run that
failed or was capped for some conversations makes the loop run `partial`; its figures go into the loop report.
"""
from __future__ import annotations

from loops.loop.context import RunContext, StepSkipped

FIGURES = ("judged", "cached", "failed", "unparseable", "requests", "tokens", "status", "run_id", "rubric_version")


def judge(ctx: RunContext) -> dict:
    from annotations.pii import Redactor
    from curation.judge.config import JudgeSettings
    from curation.judge.run import Judge

    settings = ctx.config.judge if ctx.config.judge.endpoints else JudgeSettings.resolve(ctx.store.home)
    if not settings.endpoints:
        raise StepSkipped("no judge endpoints configured ([[judge.endpoints]] in the loop file or curate.toml)")
    result = Judge(settings, redact=Redactor().redact).judge(ctx.store, every=True, progress=ctx.progress)
    figures = {k: result[k] for k in FIGURES}
    if result["status"] != "done":
        errors = "; ".join(f"{k}: {v}" for k, v in result["errors"].items())
        figures["partial"] = (f"{result['failed']} conversations not judged"
                              + (f", {result['capped']} left by the {result['cap']} cap" if result["cap"] else "")
                              + (f" ({errors})" if errors else ""))
    return figures
