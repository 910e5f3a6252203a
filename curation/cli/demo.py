"""`curate demo`: the whole loop on generated sample traffic, offline."""
from __future__ import annotations

import time

import click
import orjson

from curation.cli.common import PORT, handled, home_option, json_option


@click.command()
@click.option("--conversations", "n", type=click.IntRange(1), default=1_500, show_default=True, help="Conversations of day 1 (day 2 brings half as many).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the traffic and the simulated annotators.")
@click.option("--port", type=PORT, default=None, help="Port for the embedded Argilla server (default 6900, else a free one).")
@click.option("--no-serve", is_flag=True, help="Stop the Argilla server at the end instead of leaving it up (for CI).")
@home_option
@json_option
def demo(n, seed, port, no_serve, home, as_json):
    """Generate sample production traffic with planted failures and run the loop on it twice.

    Between the runs, simulated annotators (seeded, noisy, clearly not people) rate the pushed conversations through
    the real Argilla API. The second run trains a reward model from those ratings and gates it. At the end the
    embedded Argilla server stays up (Ctrl+C stops it) and the report's path, the URL and the login are printed.
    """
    from loops.demo import run_demo

    say = (lambda _: None) if as_json else (lambda line: click.echo(line, err=True))
    with handled(as_json):
        summary, server = run_demo(home, conversations=n, seed=seed, port=port, on_event=say)
    if as_json:
        click.echo(orjson.dumps({**summary, "served": not no_serve}, default=str).decode())
    else:
        click.echo(closing(summary, served=not no_serve, home=home))
    if no_serve:
        server.stop()
        return
    if not as_json:
        click.echo("The Argilla server stays up so you can look around; press Ctrl+C to stop it.")
    try:
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def closing(summary: dict, served: bool, home: str | None) -> str:
    """The last lines: the report, and the Argilla URL with its login only while the server runs. A password is
    shown only when it is Argilla's public default, as `annotate serve` does."""
    from annotations.server.settings import DEFAULT_PASSWORD

    user, password = summary["login"]["username"], summary["login"]["password"]
    login = f"login {user} / {password}" if password == DEFAULT_PASSWORD else f"login {user}, password $CURATE_ANNOTATE_OWNER_PASSWORD"
    if served:
        return f"\nreport:  {summary['report']}\nArgilla: {summary['url']}  ({login})"
    again = "curate annotate serve" + (f" --home {home}" if home else "")
    return f"\nreport:  {summary['report']}\nArgilla: stopped (--no-serve); `{again}` serves the rated tasks again, {login}"
