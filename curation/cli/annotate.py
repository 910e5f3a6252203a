"""`curate annotate …`: the embedded Argilla server, pushing tasks and pulling ratings."""
from __future__ import annotations

import importlib

import click


@click.group()
def annotate() -> None:
    """Send failure conversations to Argilla for HelpSteer2-style rating, and bring the ratings home.

    ARGILLA_API_URL / ARGILLA_API_KEY select the Argilla server (default: the embedded one from `annotate serve`).
    """


# Commands live in small modules: the server's (serve, users), the routing ones (push, pull, status), the
# simulated annotators that stand in for people (simulate), and ratings made elsewhere (import).
for module_name in ("curation.cli.annotate_server", "curation.cli.annotate_route", "curation.cli.annotate_simulate",
                    "curation.cli.annotate_import"):
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # the `server` or `argilla` extra is not installed
        if exc.name and exc.name.startswith(("curation", "annotations", "loops")):
            raise
        continue
    for command in module.COMMANDS:
        annotate.add_command(command)
