"""The loop's steps, in order. Each is idempotent: run twice, it changes nothing the second time.

A step reads its settings from the loop file and the figures of the steps before it in the same run, calls one
library function, and returns the figures to record.
"""
from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from curation.errors import CurateError
from curation.store import loads, utcnow
from loops.loop.context import RunContext, StepSkipped
from loops.loop.judge_step import judge
from loops.loop.tables import loop_files


def ingest(ctx: RunContext) -> dict:
    """New files from the sources (a file counts as seen by path, size and mtime), plus what the logger wrote."""
    from curation.ingest import ingest as run_ingest
    from curation.ingest.readers import expand
    from curation.store.tables import conversations

    cfg = ctx.config.sources
    paths = []
    for given in cfg.paths:
        path = Path(given.replace("{home}", str(ctx.store.home)))
        if given.startswith("{home}"):
            path.mkdir(parents=True, exist_ok=True)
        paths.append(str(path))
    seen = _seen_files(ctx)
    new = []
    for source in expand(paths, cfg.format) if paths and any(_has_files(p) for p in paths) else []:
        stat = os.stat(source.path)
        if seen.get(source.path) != (stat.st_size, stat.st_mtime):
            new.append((source.path, stat.st_size, stat.st_mtime))
    figures = {"files": len(new), "read": 0, "ingested": 0, "duplicates": 0, "quarantined": 0}
    if new:
        summary = run_ingest(ctx.store, [p for p, _, _ in new], fmt=cfg.format, progress=ctx.progress)
        figures.update({k: summary[k] for k in ("read", "ingested", "duplicates", "quarantined", "conversations")})
        figures["quarantine_file"] = summary["quarantine_file"]
        with ctx.store.begin() as conn:
            conn.execute(loop_files.delete().where(loop_files.c.loop == ctx.config.name,
                                                   loop_files.c.path.in_([p for p, _, _ in new])))
            conn.execute(loop_files.insert(), [
                {"loop": ctx.config.name, "path": p, "size": size, "mtime": mtime, "run_id": ctx.run_id, "ingested_at": utcnow()}
                for p, size, mtime in new])
    if cfg.logged:
        since = ctx.previous["started_at"] if ctx.previous else ""
        with ctx.store.connect() as conn:
            figures["logged"] = conn.execute(sa.select(sa.func.count()).select_from(conversations).where(
                conversations.c.source == "logger", conversations.c.ingested_at > since)).scalar_one()
    with ctx.store.connect() as conn:
        figures["total_conversations"] = conn.execute(sa.select(sa.func.count()).select_from(conversations)).scalar_one()
    if not new and not figures.get("logged"):
        raise StepSkipped("nothing new to ingest: no new source files and no newly logged conversations", figures)
    return figures


def _has_files(path: str) -> bool:
    p = Path(path)
    return p.is_file() or (p.is_dir() and any(x.is_file() and not x.name.startswith(".") for x in p.iterdir()))


def _seen_files(ctx: RunContext) -> dict[str, tuple[int, float]]:
    with ctx.store.connect() as conn:
        rows = conn.execute(sa.select(loop_files.c.path, loop_files.c.size, loop_files.c.mtime)
                            .where(loop_files.c.loop == ctx.config.name)).all()
    return {p: (size, mtime) for p, size, mtime in rows}


def embed(ctx: RunContext) -> dict:
    from curation.embed import embed as run_embed

    cfg = ctx.config.embed
    return run_embed(ctx.store, model=cfg.model or None, backend=cfg.backend, view=cfg.view, progress=ctx.progress,
                     **_engine(ctx))  # None (not set in the loop file or the environment): curate.toml, else the default


def _engine(ctx: RunContext) -> dict:
    """The loop file's [engine] as keyword arguments; unset or empty values leave the environment and curate.toml to
    decide."""
    return {"engine": ctx.config.engine.kind or None, "address": ctx.config.engine.address or None}


def cluster(ctx: RunContext) -> dict:
    """Failure scoring and clustering as `curate cluster` runs them; the failure model is refreshed by `pull`."""
    from loops.failures.find import find_failures

    cfg = ctx.config.cluster
    return find_failures(ctx.store, k=cfg.k, algorithm=cfg.algorithm, seed=cfg.seed, refresh_model=False,
                         progress=ctx.progress, **_engine(ctx))


def score(ctx: RunContext) -> dict:
    """Score with the champion reward model (its low rewards become a failure signal in `flag`)."""
    from loops import registry
    from loops.reward import score as run_score

    champion = registry.champion(ctx.store)
    if champion is None:
        raise StepSkipped("no champion reward model yet")
    return {**run_score(ctx.store, model=champion["version"], progress=ctx.progress, **_engine(ctx)),
            "model": champion["version"]}


def flag(ctx: RunContext) -> dict:
    from curation.cluster import rank_clusters
    from curation.signals import score_failures

    figures = score_failures(ctx.store, progress=ctx.progress, **_engine(ctx))
    ranked = rank_clusters(ctx.store, top=5)
    figures["top_clusters"] = [{k: r.get(k) for k in ("id", "label", "size", "failure_rate", "lift")} for r in ranked]
    return figures


def _annotation(ctx: RunContext, action: str) -> dict:
    from annotations.client import ServerUnreachable

    cfg = ctx.config.annotate
    if not cfg.enabled:
        raise StepSkipped("annotation is disabled in the loop file")
    if cfg.api_url:
        os.environ.setdefault("ARGILLA_API_URL", cfg.api_url)
    try:
        if action == "push":
            from annotations.push import push
            from annotations.tables import annotation_records
            from curation.store.tables import runs

            # the budget is per run: what this run's own pushes sent before it was cut off counts (not a push someone
            # ran beside it), so a resumed run tops up to the same total (push's own resume is off: this covers it)
            with ctx.store.connect() as conn:
                ours = [run for run, params in conn.execute(sa.select(runs.c.id, runs.c.params).where(
                    runs.c.kind == "push", runs.c.params.contains(ctx.run_id))) if loads(params).get("loop_run") == ctx.run_id]
                done = conn.execute(sa.select(sa.func.count()).select_from(annotation_records).where(
                    annotation_records.c.dataset == cfg.dataset, annotation_records.c.run_id.in_(ours))).scalar_one()
            result = push(ctx.store, cfg.dataset, budget=max(0, cfg.budget - done), strategy=cfg.strategy,
                          run_params={"loop_run": ctx.run_id},
                          workspace=cfg.workspace, min_submitted=cfg.min_submitted, pairs=cfg.pairs,
                          suggestions_from=(ctx.figures.get("score") or {}).get("model"), progress=ctx.progress,
                          resume=False, generator=_generator(ctx) if cfg.pairs else None)
            if result["generation_failed"]:  # those records stay single-response; the run ends partial
                result["partial"] = f"{result['generation_failed']} candidate responses could not be generated"
            return result
        from annotations.pull import pull

        return pull(ctx.store, cfg.dataset, workspace=cfg.workspace, progress=ctx.progress)
    except ServerUnreachable as exc:
        raise StepSkipped(str(exc), unreachable=True) from None


def _generator(ctx: RunContext):
    """A generator when the loop file's [generate], else curate.toml's, names endpoints; else None."""
    from annotations.generate import GenerateSettings, Generator

    settings = ctx.config.generate if ctx.config.generate.endpoints else GenerateSettings.resolve(ctx.store.home)
    return Generator(settings) if settings.endpoints else None


def push(ctx: RunContext) -> dict:
    return _annotation(ctx, "push")


def pull(ctx: RunContext) -> dict:
    """Pull the ratings, then refit the failure model on them (docs/concepts-failures.md); its verdict joins the figures."""
    from loops.failures import refresh

    figures = _annotation(ctx, "pull")
    model = refresh(ctx.store)
    figures["failure_model"] = {k: model.get(k) for k in ("refit", "version", "promoted", "reason", "n_ratings", "scored")}
    if model.get("cv"):
        figures["failure_model"]["cv"] = {k: model["cv"][k] for k in ("ap", "prior_ap", "lift", "prior_lift", "brier")}
    return figures


def export(ctx: RunContext) -> dict:
    """Export preference pairs from all ratings so far, when there are any."""
    from annotations.tables import ratings
    from loops.export import PairRules, export_preferences

    with ctx.store.connect() as conn:
        n_ratings = conn.execute(sa.select(sa.func.count()).select_from(ratings)).scalar_one()
    cfg = ctx.config.export
    if not n_ratings and not cfg.mix:
        raise StepSkipped("no ratings yet")
    rules = PairRules(rules=tuple(cfg.rules), tie_threshold=cfg.tie_threshold, include_disagreement=cfg.include_disagreement,
                      test_size=cfg.test_size, seed=cfg.seed)
    mix = [m.replace("{home}", str(ctx.store.home)) for m in cfg.mix]
    try:
        return export_preferences(ctx.store, ctx.path("exports", ctx.run_id), fmt="jsonl", rules=rules, mix=mix)
    except CurateError as exc:
        if str(exc).startswith("no preference pairs"):  # ratings, but none that the rules turn into pairs yet
            raise StepSkipped(str(exc)) from None
        raise


def train(ctx: RunContext) -> dict:
    """Retrain when the export has at least `train.min_new_pairs` more pairs than the newest model was trained on."""
    from loops import registry
    from loops.reward import TrainConfig
    from loops.reward import train as run_train

    exported = ctx.figures.get("export") or {}
    if not exported.get("pairs"):
        raise StepSkipped("no preference pairs exported in this run")
    out = Path(ctx.path("models", ctx.run_id))
    models = registry.list_models(ctx.store)
    mine = [m for m in models if Path(m["path"]).resolve() == out.resolve()]
    if mine:  # trained and registered before a crash: keep that model
        return {"version": mine[0]["version"], "model": mine[0]["path"], "reused": True}
    last_pairs = max((int((_metrics(m)).get("train_pairs") or 0) for m in models), default=0)
    new_pairs = max(0, exported["train"] - last_pairs)  # another split of the same ratings can hold fewer
    cfg = ctx.config.train
    if new_pairs < cfg.min_new_pairs:
        had = f" ({exported['train']} exported for training; the largest training set so far had {last_pairs})" if last_pairs else ""
        raise StepSkipped(f"not triggered: {new_pairs} new training pairs{had} < train.min_new_pairs = {cfg.min_new_pairs}")
    settings = TrainConfig(max_length=cfg.max_length, epochs=cfg.epochs, seed=cfg.seed)
    result = run_train(exported["out"], out, base=cfg.base or None, loss=cfg.loss, config=settings,
                       store=ctx.store, progress=ctx.progress)
    return {**result, "new_pairs": new_pairs}


def _metrics(model: dict) -> dict:
    from curation.store import loads

    metrics = model.get("metrics")
    return loads(metrics) if isinstance(metrics, str) else (metrics or {})


def evaluate(ctx: RunContext) -> dict:
    """Accuracy of the new model on the fixed gate set (fixed the first time, from the loop file or the export)."""
    from loops.reward import evaluate as run_evaluate

    trained = ctx.figures.get("train") or {}
    if not trained.get("version"):
        raise StepSkipped("no model trained in this run")
    gate = _gate(ctx)
    result = run_evaluate(trained["model"], str(gate), progress=ctx.progress)
    return {"version": trained["version"], "gate": str(gate), **result}


def promote(ctx: RunContext) -> dict:
    """The gate (loops.reward.gate): the new model replaces the champion only if it passes on the fixed gate set."""
    from loops.reward.gate import promote as run_promote
    from loops.tables import promotions

    trained = ctx.figures.get("train") or {}
    if not trained.get("version"):
        raise StepSkipped("no model trained in this run")
    with ctx.store.connect() as conn:  # decided before a crash: the decision stands
        earlier = conn.execute(sa.select(promotions).where(promotions.c.challenger == trained["version"])).mappings().first()
    if earlier is not None:
        figures = loads(earlier["figures"])
        return {"decision": earlier["decision"], "challenger": earlier["challenger"], "champion": earlier["champion"],
                "reason": figures.get("reason", ""), "figures": figures}
    return run_promote(ctx.store, trained["version"], gate=_gate(ctx), tolerance=ctx.config.gate.tolerance,
                       top_clusters=ctx.config.gate.clusters, progress=ctx.progress)


def _gate(ctx: RunContext) -> Path:
    """The gate set stays fixed once chosen: the loop file's, else the first export's test split."""
    from loops.reward.gate import GATE_FILE

    fixed = ctx.store.home / GATE_FILE
    if ctx.config.gate.pairs:
        return Path(ctx.config.gate.pairs)
    if fixed.exists():
        return fixed
    exported = ctx.figures.get("export") or {}
    if not exported.get("test"):
        raise StepSkipped("no gate set yet: the export's test split is empty (more ratings, or a larger "
                          "export.test_size, or gate.pairs in the loop file)")
    return Path(exported["out"])


def report(ctx: RunContext) -> dict:
    from loops.loop.report import write_run_report

    out = ctx.path("reports", f"loop-{ctx.run_id}.html")
    return write_run_report(ctx.store, ctx.run_id, out)


STEPS = [
    ("ingest", ingest), ("embed", embed), ("judge", judge), ("cluster", cluster), ("score", score), ("flag", flag),
    ("push", push), ("pull", pull), ("export", export), ("train", train), ("evaluate", evaluate),
    ("promote", promote), ("report", report),
]
