"""`curate annotate serve` and `curate annotate users add`: the embedded Argilla server and its users."""
from __future__ import annotations

import click

from curation.cli.common import PORT, fail, home_option, json_option, reports
from curation.errors import CurateError


@click.command()
@home_option
@click.option("--host", default=None, help="Interface to bind (default 127.0.0.1; others need a non-default key and password).")
@click.option("--port", type=PORT, default=None, help="TCP port (default 6900).")
@click.option("--log-level", default="warning", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True,
              help="How much the server logs to stderr.")
def serve(home: str | None, host: str | None, port: int | None, log_level: str) -> None:
    """Run the embedded Argilla server (web UI and API) until Ctrl+C or SIGTERM.

    State lives in HOME/argilla/. The owner's API key is $ARGILLA_API_KEY when set (the SDK's own variable),
    its password $CURATE_ANNOTATE_OWNER_PASSWORD. Annotators' queues serve the highest failure score first.
    One server per home. Browsers reach it only by its own names and origins, plus those in
    $CURATE_ANNOTATE_ALLOWED_HOSTS and $CURATE_ANNOTATE_ALLOWED_ORIGINS (see docs/annotation-server.md).
    """
    from annotations.server import ServerSettings
    from annotations.server import app

    try:
        settings = ServerSettings.resolve(home, host=host, port=port)
        app.serve(settings, log_level=log_level, announce=lambda line: click.echo(line, err=True))
    except CurateError as exc:
        fail(str(exc))


@click.group()
def users() -> None:
    """Users of the embedded Argilla server."""


@users.command("add")
@home_option
@json_option
@click.argument("name")
@click.option("--role", type=click.Choice(["annotator", "admin", "owner"]), default="annotator", show_default=True,
              help="annotator: rates in the workspaces it joins; admin: also manages datasets; owner: everything.")
@click.option("--password", envvar="CURATE_USER_PASSWORD", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 8 characters; read from $CURATE_USER_PASSWORD, else asked for (never echoed).")
@click.option("--workspace", "workspaces", multiple=True, help="Workspace to join (repeatable; default: all of them).")
@reports
def add(home: str | None, as_json: bool, name: str, role: str, password: str, workspaces: tuple[str, ...]):
    """Create a user NAME (or update its role and password); works whether the server runs or not."""
    from annotations.server import add_user

    result = add_user(home, name, role=role, password=password, workspaces=list(workspaces) or None)
    verb = "created" if result["created"] else "updated"
    return result, f"user {name} ({role}) {verb}; workspaces: {', '.join(result['workspaces'])}"


COMMANDS = [serve, users]
