"""`curate cluster`, `curate clusters` and `curate clusters show ID`."""
from __future__ import annotations

import click

from curation.cli.common import SEED, home_option, json_option, reports


def _k(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 2:
        raise click.BadParameter("use auto or an integer ≥ 2 (one cluster ranks nothing), as a loop file's cluster.k")
    return int(value)


@click.command()
@click.option("--k", "k", default="auto", show_default=True, callback=lambda _c, _p, v: _k(v),
              help="Number of clusters, or auto (silhouette within 2× of √(n/2); see docs/concepts-failures.md).")
@click.option("--algorithm", type=click.Choice(["kmeans", "hdbscan"]), default="kmeans", show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed: same input and seed, same clusters.")
@click.option("--refit/--no-refit", default=None,
              help="Force (or forbid) re-clustering; by default it refits only when over 10% of conversations are novel.")
@click.option("--space", default=None, help="Embedding space (model|view|backend); default: the newest.")
@click.option("--labeller", type=click.Choice(["ctfidf", "llm"]), default=None,
              help="How clusters are named: ctfidf keywords (default), or llm: an endpoint names them from their "
                   "keywords and a few user texts, which leave the machine (docs/concepts-failures.md). Also "
                   "curate.toml [cluster.labeller] kind, env CURATE_CLUSTER_LABELLER.")
@click.option("--llm-url", default=None,
              help="OpenAI-compatible API base for --labeller llm, e.g. http://localhost:8000/v1 (env CURATE_LLM_URL; "
                   "API key from env CURATE_LLM_API_KEY).")
@click.option("--llm-model", default=None, help="Model name for --labeller llm (env CURATE_LLM_MODEL).")
@home_option
@json_option
@reports
def cluster(k, algorithm, seed, refit, space, labeller, llm_url, llm_model, home, as_json):
    """Score failure signals and cluster the embedded conversations; cluster ids survive later runs."""
    from curation.cluster import LLMLabeller, make_labeller
    from curation.cluster import cluster as run_cluster
    from curation.store import Store

    store = Store.open(home)
    namer = make_labeller(store, kind=labeller, url=llm_url, model=llm_model)
    if (llm_url or llm_model) and not isinstance(namer, LLMLabeller):
        raise click.UsageError("--llm-url and --llm-model apply to the llm labeller only; add --labeller llm")
    result = run_cluster(store, k=k, algorithm=algorithm, seed=seed, space=space,
                         refit="auto" if refit is None else refit, labeller=namer)
    verb = "re-clustered into" if result["refit"] else "extended"
    human = (f"{verb} {result['clusters']} clusters: {result['assigned']} assignments written, "
             f"{result['novel']} novel, in {result['seconds']}s (run {result['run_id']})")
    if isinstance(namer, LLMLabeller):
        result["labeller"] = {"kind": "llm", "model": namer.model, **namer.stats_}
        human += (f"\nLLM labels: {namer.stats_['labelled']} named by {namer.model}, {namer.stats_['failed']} kept "
                  f"c-TF-IDF after endpoint errors, {namer.stats_['private']} not sent (too few users)")
    return result, human


@click.group(invoke_without_command=True)
@click.option("--top", type=click.IntRange(1), default=None, help="Show only the N highest-ranked clusters.")
@click.option("--min-users", type=click.IntRange(1), default=5, show_default=True,
              help="Privacy threshold: show label, keywords and examples only for clusters with this many distinct users.")
@home_option
@json_option
@click.pass_context
def clusters(ctx, top, min_users, home, as_json):
    """Clusters ranked by failure: rate with a Wilson interval, lift, Benjamini–Hochberg q-value."""
    if ctx.invoked_subcommand is not None:
        return
    _ranked(top=top, min_users=min_users, home=home, as_json=as_json)


@reports
def _ranked(top, min_users, home, as_json):
    from curation.cluster import rank_clusters
    from curation.store import Store

    rows = rank_clusters(Store.open(home), top=top, min_users=min_users)
    return {"clusters": rows}, format_table(rows)


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no clusters yet; run `curate embed` and `curate cluster`"
    lines = [f"{'id':>4} {'size':>7} {'fail%':>6} {'95% CI':>13} {'lift':>5} {'q':>7}  label"]
    for r in rows:
        lift = "-" if r["lift"] is None else f"{r['lift']:.2f}"
        label = f"({r['size']} conversations, too few users to show)" if r["hidden"] else r["label"]
        ci = f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}%"
        lines.append(f"{r['id']:>4} {r['size']:>7} {100 * r['failure_rate']:>5.1f}% {ci:>13} {lift:>5} "
                     f"{r['q_value']:>7.3g}  {label}")
    return "\n".join(lines)


@clusters.command("show")
@click.argument("cluster_id", type=int)
@click.option("-n", "n", type=click.IntRange(1), default=5, show_default=True, help="Examples of each kind.")
@click.option("--min-users", type=click.IntRange(1), default=5, show_default=True)
@home_option
@json_option
@reports
def show(cluster_id, n, min_users, home, as_json):
    """A cluster's most central and worst conversations, with the signals that fired."""
    from curation.cluster import show_cluster
    from curation.store import Store

    result = show_cluster(Store.open(home), cluster_id, n=n, min_users=min_users)
    return result, format_cluster(result)


def format_cluster(c: dict) -> str:
    head = (f"cluster {c['id']}: {c['label'] or '(hidden: too few users)'}\n"
            f"  {c['size']} conversations, {c['failures']} failing ({100 * c['failure_rate']:.1f}%, "
            f"95% CI {100 * c['ci_low']:.1f}–{100 * c['ci_high']:.1f}%), q = {c['q_value']:.3g}\n"
            f"  keywords: {', '.join(c['keywords'])}")
    parts = [head]
    for title, items in (("most central", c["central"]), ("worst", c["worst"])):
        if items:
            parts.append(f"\n{title}:")
        for e in items:
            parts.append(f"- {e['id']}  failure {e['failure_score'] if e['failure_score'] is not None else '-'}\n"
                         f"    user: {e['prompt']}\n    reply: {e['reply']}")
            parts += [f"    ! {s['name']} ({s['weight']:+g}): {s['why']}" for s in e["signals"]]
    return "\n".join(parts)
