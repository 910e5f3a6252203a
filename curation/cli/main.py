"""The `curate` command. Each command group lives in its own module and stays thin."""
from __future__ import annotations

import importlib

import click

# (module, attribute) of each command or group; imported when the CLI starts, each module imports its heavy
# library code inside the command so that `curate --help` stays fast.
COMMANDS = [
    ("curation.cli.ingest", "ingest"),
    ("curation.cli.embed", "embed"),
    ("curation.cli.cluster", "cluster"),
    ("curation.cli.cluster", "clusters"),
    ("curation.cli.report", "report"),
    ("curation.cli.annotate", "annotate"),
    ("curation.cli.generate", "generate"),
    ("curation.cli.judge", "judge"),
    ("curation.cli.export", "export"),
    ("curation.cli.reward", "reward"),
    ("curation.cli.loop", "loop"),
    ("curation.cli.demo", "demo"),
    ("curation.cli.collect", "collect"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="curate")
def cli() -> None:
    """Curate: find where your LLM fails, have people rate it, and retrain the reward model.

    The loop: ingest → embed → cluster → annotate (Argilla) → export preferences → reward train → score.
    Every command takes --home DIR (default $CURATE_HOME, else ./.curate); reporting commands take --json.
    Exit codes: 0 done, 1 failed (one-line message on stderr), 2 usage error.
    """


for module_name, attr in COMMANDS:
    try:
        cli.add_command(getattr(importlib.import_module(module_name), attr))
    except ModuleNotFoundError as exc:
        # An optional extra (argilla, …) is not installed: keep the rest of the CLI usable.
        if exc.name and exc.name.startswith(("curation", "annotations", "loops")):
            raise


def main() -> None:
    cli(prog_name="curate")


if __name__ == "__main__":
    main()
