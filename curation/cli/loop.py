"""`curate loop …`: the periodic loop, for cron and other schedulers."""
from __future__ import annotations

import sys

import click
import orjson

from curation.cli.common import fail, handled, home_option, json_option, reports


@click.group()
def loop() -> None:
    """Run the whole loop (ingest → embed → cluster → score → flag → push → pull → export → train → evaluate →
    promote → report) as one idempotent, resumable job, and look at past runs.

    Exit codes of `loop run`: 0 done, 3 partial (e.g. Argilla unreachable: annotation steps skipped), 1 failed,
    2 usage error, 75 another run of this loop is in progress (nothing was done).
    """


@loop.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Loop file (TOML), e.g. loops/nightly.toml; default: built-in defaults.")
@home_option
@json_option
def run(config_path, home, as_json):
    """Run the loop, or resume its last run if that one crashed or was killed."""
    from curation.errors import ConfigError
    from curation.store import Store
    from loops.loop.config import load
    from loops.loop.lock import LoopBusy
    from loops.loop.runner import EXIT_BUSY, exit_code, run_loop

    try:
        config = load(config_path)
    except ConfigError as exc:  # a broken or mistyped loop file: nothing has run, exit 2 naming the file and key
        raise click.UsageError(str(exc)) from None
    try:
        with handled(as_json, own=(LoopBusy,)):
            store = Store.open(home)
            on_step = None if as_json else (lambda name, rec: click.echo(_step_line(name, rec), err=True))
            result = run_loop(store, config, on_step=on_step)
    except LoopBusy as exc:
        if as_json:
            click.echo(orjson.dumps({"status": "busy", "run_id": exc.holder["run_id"], "message": str(exc)}).decode())
        fail(str(exc), code=EXIT_BUSY)
    if as_json:
        click.echo(orjson.dumps(result, default=str).decode())
    else:
        click.echo(_run_text(result))
    if result["status"] == "failed":
        failed = [n for n, s in result["steps"].items() if s["status"] == "failed"]
        message = result["steps"][failed[0]].get("message", "").splitlines()[0] if failed else "unknown error"
        click.echo(f"error: step {failed[0] if failed else '?'} failed: {message}; run the same command to resume", err=True)
    sys.exit(exit_code(result["status"]))


def _step_line(name: str, rec: dict) -> str:
    figures = ", ".join(f"{k}={v}" for k, v in rec["figures"].items() if isinstance(v, (int, float, str)) and len(str(v)) < 40)
    note = f" ({rec['message'].splitlines()[0]})" if rec.get("message") else ""
    return f"  {name:<9} {rec['status']:<8} {rec['seconds']:7.1f}s  {figures[:110]}{note}"


def _run_text(result: dict) -> str:
    head = f"loop {result['loop']} run {result['run_id']}: {result['status']}" + (" (resumed)" if result["resumed"] else "")
    report = (result["steps"].get("report", {}).get("figures") or {}).get("out")
    return head + (f"\nreport: {report}" if report else "")


@loop.command("status")
@click.option("--loop", "name", default=None, help="Loop name (default: any).")
@home_option
@json_option
@reports
def status(name, home, as_json):
    """The newest run with its steps, and whether a run is in progress now."""
    from curation.store import Store
    from loops.loop.history import status as loop_status

    result = loop_status(Store.open(home), name)
    latest = result["latest"]
    lines = ["no loop runs yet"] if latest is None else [
        f"latest run {latest['run_id']} ({latest['loop']}): {latest['status']}, started {latest['started_at']}"]
    if latest is not None:
        lines += [f"  {n:<9} {s['status']:<8} {s['seconds'] or 0:7.1f}s" + (f"  {s['message'].splitlines()[0][:80]}" if s.get("message") else "")
                  for n, s in latest["steps"].items()]
    for r in result["running"]:
        holder = f"run {r['run_id']} (pid {r['pid']} on {r['host']}, since {r['acquired_at']})"
        lines.append(f"stale lock: {holder}; its process is gone, the next `curate loop run` resumes it" if r["stale"]
                     else f"in progress: {holder}")
    return result, "\n".join(lines)


@loop.command("history")
@click.option("--loop", "name", default=None, help="Loop name (default: any).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="How many runs, newest first.")
@home_option
@json_option
@reports
def history(name, limit, home, as_json):
    """Past runs: status, duration, and what each produced (ingested, clusters, failure rate, pushed, ratings,
    pairs, model accuracy, promotion)."""
    from curation.store import Store
    from loops.loop.history import history as loop_history

    runs = loop_history(Store.open(home), name, limit)
    cols = ["status", "seconds", "ingested", "clusters", "failure_rate", "pushed", "ratings_pulled", "pairs_exported",
            "model_accuracy", "promotion"]
    lines = ["started_at            " + " ".join(f"{c:>14}" for c in cols)]
    for r in runs:
        cells = [f"{(round(r[c], 3) if isinstance(r[c], float) else r[c])!s:>14}" for c in cols]
        lines.append(f"{r['started_at'][:19]}   " + " ".join(cells))
    return {"runs": runs}, "\n".join(lines)
