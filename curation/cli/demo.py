"""`curate demo`: the loop on generated sample traffic, offline."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports


@click.command()
@click.option("--conversations", "n", type=int, default=3_000, show_default=True, help="How many conversations to generate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the generated traffic.")
@click.option("--no-serve", is_flag=True, help="Do not leave the Argilla server running at the end (for CI).")
@home_option
@json_option
@reports
def demo(n, seed, no_serve, home, as_json):  # noqa: ANN001, ANN201
    """Generate sample production traffic with planted failures and run Curate on it."""
    from curation.config import resolve_home
    from curation.ingest import ingest
    from curation.sample import write_jsonl
    from curation.store import Store

    home_path = resolve_home(home)
    traffic = write_jsonl(home_path / "demo" / f"traffic-{seed}.jsonl", n, seed=seed)
    store = Store.open(home_path)
    summary = ingest(store, [traffic])
    result = {"traffic": str(traffic), "ingest": summary}
    human = (f"generated {n:,} conversations → {traffic}\n"
             f"ingested {summary['ingested']:,} (duplicates {summary['duplicates']:,}, quarantined {summary['quarantined']:,})")
    return result, human
