"""`curate annotate simulate`: simulated annotators rate a dataset, standing in for people in a tour or a test."""
from __future__ import annotations

import click

from curation.cli.annotate_route import dataset_option, workspace_option
from curation.cli.common import SEED, home_option, json_option, reports


@click.command()
@dataset_option
@workspace_option
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the annotators' noise: same seed, same ratings.")
@click.option("--annotators", "n_annotators", type=click.IntRange(1, 20), default=3, show_default=True,
              help="How many simulated annotators (Argilla users simulated-annotator-1 … N).")
@click.option("--per-record", type=click.IntRange(1), default=2, show_default=True,
              help="Simulated annotators per record (2 or more lets `pull` measure their agreement).")
@home_option
@json_option
@reports
def simulate(dataset, workspace, seed, n_annotators, per_record, home, as_json):
    """Have simulated annotators rate every record of a dataset through the Argilla API, as people would in the UI.

    For the README tour, demos and tests, where nobody is there to rate. They are seeded, noisy scripts that answer
    from the failure planted in sample traffic (curation.synthetic); an answer without one is rated as good, so on real
    traffic their ratings say nothing. They can never pass for people's: their users are named
    simulated-annotator-N, and every pair or row made from their ratings is exported with `simulated: true` and
    counted. Afterwards `curate annotate pull` brings the ratings home as usual.
    """
    from annotations.client import address, connect
    from annotations.push import DEFAULT_WORKSPACE
    from curation.store import Store
    from loops.simulate import simulate as run_simulate

    connect(home=home)  # waits for a server that is starting, and says what to do when there is none
    url, key = address(home=home)
    result = run_simulate(Store.open(home), url, key, dataset, workspace or DEFAULT_WORKSPACE,
                          n_annotators=n_annotators, per_record=per_record, seed=seed)
    text = (f"{len(result['annotators'])} simulated annotators ({result['annotators'][0]} …, not people) gave "
            f"{result['responses']:,} responses on {result['records']:,} records of {dataset!r}; "
            f"`curate annotate pull --dataset {dataset}` brings them home, marked simulated")
    if result["without_truth"]:
        text += (f"\n{result['without_truth']:,} of the {result['records']:,} records have no planted failure (not "
                 "sample traffic): the simulated annotators rated them as good answers, which says nothing about them")
    return result, text


COMMANDS = [simulate]
