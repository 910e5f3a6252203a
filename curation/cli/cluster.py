"""`curate cluster`, `curate clusters` and `curate clusters show ID`."""
from __future__ import annotations

import click

from curation.cli.common import SEED, home_option, json_option, reports
from curation.cli.engine import engine_options, engine_usage

min_users_option = click.option(
    "--min-users", type=click.IntRange(1), default=5, show_default=True,
    help="Privacy threshold: show a cluster's label, keywords and examples only when this many distinct users are "
         "in it (off when the store has no user ids).")


def _k(value: str) -> int | str:
    from curation.config import parse_k

    try:
        return parse_k(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (as a loop file's cluster.k)") from None


@click.command()
@click.option("--k", "k", default="auto", show_default=True, callback=lambda _c, _p, v: _k(v),
              help="Number of clusters, or auto (silhouette within 2× of √(n/2); see docs/concepts-failures.md).")
@click.option("--algorithm", type=click.Choice(["kmeans", "hdbscan"]), default="kmeans", show_default=True,
              help="kmeans: --k clusters; hdbscan: finds dense groups itself on a 20,000-row sample, then noise "
                   "and the other rows join the nearest group (docs/concepts-failures.md).")
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
@click.option("--failure-rule", default=None,
              help="Which ratings count as failures for the learned failure model, e.g. 'helpfulness <= 1 or "
                   "correctness <= 1' (the default; env CURATE_FAILURE_RULE, curate.toml [failure_model] rule).")
@click.option("--sample-size", type=click.IntRange(2), default=None,
              help="Fit on this many sampled vectors and stream the rest through the assignment, chunk by chunk "
                   "(default: 200 per cluster at the finest k tried, 100,000 to 500,000; docs/concepts-failures.md).")
@engine_options
@home_option
@json_option
@reports
def cluster(k, algorithm, seed, refit, space, labeller, llm_url, llm_model, failure_rule, sample_size, engine, ray_address,
            home, as_json):
    """Score failure signals and cluster the embedded conversations; cluster ids survive later runs."""
    from curation.cluster import LLMLabeller, make_labeller
    from curation.store import Store
    from loops.failures.find import find_failures

    store = Store.open(home)
    namer = make_labeller(store, kind=labeller, url=llm_url, model=llm_model)
    if (llm_url or llm_model) and not isinstance(namer, LLMLabeller):
        raise click.UsageError("--llm-url and --llm-model apply to the llm labeller only; add --labeller llm")
    with engine_usage():  # the per-conversation parts run on the engine: failure scoring, and the streamed assignment
        result = find_failures(store, k=k, algorithm=algorithm, seed=seed, space=space,
                               refit="auto" if refit is None else refit, labeller=namer, sample=sample_size,
                               engine=engine, address=ray_address, failure_rule=failure_rule)
    verb = "re-clustered into" if result["refit"] else "extended"
    human = (f"{verb} {result['clusters']} clusters: {result['assigned']} assignments written, "
             f"{result['novel']} novel, in {result['seconds']}s (run {result['run_id']})")
    if result["novel"]:
        human += (f"\n{result['novel']} of {result['conversations']} conversations "
                  f"({result['novel'] / result['conversations']:.1%}) are novel: unlike every cluster, they wait in "
                  f"the nearest one, flagged; a run will refit when novel conversations exceed "
                  f"{result['drift']:.0%} (--refit forces it)")
    human += "\n" + describe_refresh(result["failure_model"])
    if isinstance(namer, LLMLabeller):
        result["labeller"] = {"kind": "llm", "model": namer.model, **namer.stats_}
        human += (f"\nLLM labels: {namer.stats_['labelled']} named by {namer.model}, {namer.stats_['failed']} kept "
                  f"c-TF-IDF after endpoint errors, {namer.stats_['private']} not sent (too few users)")
    return result, human


@click.group(invoke_without_command=True)
@click.option("--top", type=click.IntRange(1), default=None, help="Show only the N highest-ranked clusters.")
@min_users_option
@home_option
@json_option
@click.pass_context
def clusters(ctx, top, min_users, home, as_json):
    """Clusters ranked by failure: rate with a Wilson interval, lift, and q-value (the Benjamini–Hochberg-corrected
    p-value of the cluster failing more often than the rest)."""
    if ctx.invoked_subcommand is not None:
        return
    _ranked(top=top, min_users=min_users, home=home, as_json=as_json)


@reports
def _ranked(top, min_users, home, as_json):
    from curation.cluster import rank_clusters
    from curation.store import Store

    from curation.cluster.scorer import active_scorer

    store = Store.open(home)
    rows = rank_clusters(store, top=top, min_users=min_users)
    scorer = active_scorer(store)
    return {"clusters": rows, "scorer": scorer}, format_table(rows) + "\n" + describe_scorer(scorer)


def describe_refresh(model: dict) -> str:
    """One line on what `curate cluster` did with the learned failure model."""
    if not model["refit"]:
        return f"failure model: {model['reason']}" + (f"; rescored {model['scored']} conversations" if model["scored"] else "")
    verdict = "promoted, it ranks now" if model["promoted"] else "not promoted, the prior ranks"
    return f"failure model v{model['version']} fitted on {model['n_ratings']} ratings: {verdict} ({model['reason']})"


def describe_scorer(s: dict) -> str:
    """Which scorer ranked the list, and why."""
    lines = [f"ranked by: {s['description']}", f"  why: {s['reason']}"]
    cv = s.get("cv")
    if cv:
        lift = ", ".join(f"lift@{k} {v} (prior {cv['prior_lift'].get(k)})" for k, v in cv["lift"].items() if v is not None)
        lines.append(f"  v{s['version']} cross-validated ({cv['folds']} folds grouped by context, {cv['n']} ratings): "
                     f"AP {cv['ap']} vs prior {cv['prior_ap']}; {lift}; Brier {cv['brier']}")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no clusters yet; run `curate embed` and `curate cluster`"
    lines = [f"{'id':>4} {'size':>7} {'fail%':>6} {'95% CI':>13} {'lift':>5} {'q-value':>7}  label"]
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
@min_users_option
@home_option
@json_option
@reports
def show(cluster_id, n, min_users, home, as_json):
    """A cluster's most central and worst conversations, with the signals that fired."""
    from curation.cluster import show_cluster
    from curation.store import Store

    from curation.cluster.scorer import uses_learned

    store = Store.open(home)
    result = show_cluster(store, cluster_id, n=n, min_users=min_users)
    if uses_learned(store):  # why the learned failure model scores each of the worst as it does
        from loops.failures import explain

        for e in result["worst"]:
            e["learned"] = explain(store, e["id"])
    return result, format_cluster(result)


def format_cluster(c: dict) -> str:
    head = (f"cluster {c['id']}: {c['label'] or '(hidden: too few users)'}\n"
            f"  {c['size']} conversations, {c['failures']} failing ({100 * c['failure_rate']:.1f}%, "
            f"95% CI {100 * c['ci_low']:.1f}–{100 * c['ci_high']:.1f}%), q-value {c['q_value']:.3g}\n"
            f"  keywords: {', '.join(c['keywords'])}\n"
            f"  failure = 1 − Π(1 − weight·value) over the failure signals that fired, × Π(1 − |weight|·value) over "
            f"success signals (a thumbs up); failing at ≥ 0.5")
    parts = [head]
    for title, items in (("most central", c["central"]), ("worst", c["worst"])):
        if items:
            parts.append(f"\n{title}:")
        for e in items:
            novel = "  (novel: unlike this cluster, it waits here for a refit)" if e.get("novel") else ""
            parts.append(f"- {e['id']}  failure {e['failure_score'] if e['failure_score'] is not None else '-'}{novel}\n"
                         f"    user: {e['prompt']}\n    reply: {e['reply']}")
            parts += [f"    ! {s['name']} (weight {s['weight']:+g}, value {s['value']:g}): {s['why']}" for s in e["signals"]]
            if e.get("learned"):
                why = e["learned"]
                pushed = ", ".join(f"{p['feature']} {p['log_odds']:+.2f}" for p in why["pushed_up"]) or "nothing"
                near = ", ".join(f"{f['conversation_id']} ({f['similarity']:.2f})" for f in why["nearest_rated_failures"])
                parts.append(f"    learned v{why['model_version']}: P(failure) {why['probability']:.2f}; pushed up by "
                             f"{pushed} (log-odds)" + (f"; nearest rated failures: {near}" if near else ""))
    return "\n".join(parts)
