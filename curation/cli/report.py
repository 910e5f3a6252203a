"""`curate report --out report.html`."""
from __future__ import annotations

import click

from curation.cli.common import home_option, json_option, reports


@click.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--top", type=click.IntRange(1), default=20, show_default=True, help="Clusters in the table and bars, by rank; the first 12 are coloured on the map and drawn in the trend.")
@click.option("--points", type=click.IntRange(100), default=5_000, show_default=True, help="Most conversations on the map.")
@click.option("--projection", type=click.Choice(["pca", "umap"]), default="pca", show_default=True,
              help="How the map is drawn; umap needs umap-learn and takes longer.")
@click.option("--min-users", type=click.IntRange(1), default=5, show_default=True,
              help="Privacy threshold for showing a cluster's label, keywords and examples.")
@home_option
@json_option
@reports
def report(out, top, points, projection, min_users, home, as_json):
    """Write a self-contained HTML report: cluster map, failure-rate bars, trends, the failure-cluster table."""
    from curation.report import write_report
    from curation.store import Store
    from loops.failures.agreement import judge_agreement

    store = Store.open(home)
    result = write_report(store, out, top=top, max_points=points, projection=projection, min_users=min_users,
                          judge=judge_agreement(store))
    shown, total = result["shown"], result["total_clusters"]
    which = f"the top {shown} of {total:,} clusters" if shown < total else f"all {shown} clusters"
    return result, f"wrote {result['out']}: {which}, {result['points']:,} conversations on the map"
