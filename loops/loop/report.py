"""The per-run report: one self-contained HTML file (inline SVG, no scripts from anywhere) saying what changed.

Sections: the run's steps; new and growing failure clusters against the previous run; the failure-rate trend of each
cluster across runs; annotation throughput and agreement; reward-model accuracy across versions with the gate's
decisions. Cluster labels and examples respect the privacy threshold already applied by `rank_clusters`.
"""
from __future__ import annotations

import html
from pathlib import Path

import sqlalchemy as sa

from curation.store import Store, loads
from curation.store.failure_tables import cluster_history
from loops.loop.context import makes_partial
from loops.loop.history import history

GROWTH = 1.25  # a cluster "grows" when its share of all failures rose by at least this factor since the last run
MIN_NEW_FAILURES = 3  # … and it gained at least this many failures
SHOWN = 15


def write_run_report(store: Store, run_id: str, out: str | Path) -> dict:
    """Write the report of loop run `run_id` to `out`; returns {"out", "new_clusters", "growing_clusters", …}."""
    runs = [r for r in history(store, limit=50)]
    this = next(r for r in runs if r["run_id"] == run_id)
    earlier = [r for r in runs if r["started_at"] < this["started_at"] and r["loop"] == this["loop"]]
    previous = earlier[0] if earlier else None
    trend = _cluster_trend(store)
    labels = _labels(store)
    changes = _changes(this, previous, trend)
    models = _models(store)
    body = [
        f"<h1>Curate loop <code>{_e(this['loop'])}</code>: run {_e(run_id[:8])} — {_e(_status(this))}</h1>",
        f"<p>Started {_e(this['started_at'])}, finished {_e(this['finished_at'] or 'now')}"
        + (f"; previous run {_e(previous['run_id'][:8])} at {_e(previous['started_at'])}." if previous else "; first run."),
        "</p>",
        _steps_table(this),
        "<h2>New and growing failure clusters</h2>",
        _changes_table(changes, labels),
        "<h2>Failure rate per cluster across runs</h2>",
        _trend(store),
        "<h2>Annotation</h2>",
        _annotation(runs, this),
        "<h2>Reward models</h2>",
        _models_section(models),
        _scorer(store),
        _judge(store),
    ]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Curate loop report {_e(run_id[:8])}</title>
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}
th{{background:#f5f5f5}}.skipped{{color:#8a6d3b}}.failed{{color:#a94442;font-weight:bold}}.done{{color:#3c763d}}.this-step{{color:#3c763d;font-style:italic}}
svg text{{font:11px system-ui,sans-serif}}code{{background:#f3f3f3;padding:0 3px}}</style></head>
<body>{''.join(body)}</body></html>"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {"out": str(out), "new_clusters": len([c for c in changes if c["kind"] == "new"]),
            "growing_clusters": len([c for c in changes if c["kind"] == "growing"]), "models": len(models)}


def _scorer(store: Store) -> str:
    """Which scorer ranked the clusters (the learned failure model or the prior), why, and its learning curve."""
    from curation.cluster.scorer import active_scorer, fit_history
    from curation.report.html import scorer_section

    return scorer_section(active_scorer(store), fit_history(store))


def _judge(store: Store) -> str:
    """The LLM judge against people (κ per attribute, failure confusion), when both rated some conversations."""
    from curation.report.html import judge_section
    from loops.failures.agreement import judge_agreement

    return judge_section(judge_agreement(store))


def _status(run: dict) -> str:
    """The report is written by the run's last step, so a running run reports what its steps add up to."""
    if run["status"] != "running":
        return run["status"]
    steps = run["steps"].values()
    if any(s["status"] == "failed" for s in steps):
        return "failed"
    return "partial" if any(makes_partial(s) for s in steps) else "done"


def _e(value) -> str:
    return html.escape(str(value))


def _cluster_trend(store: Store) -> dict[int, list[tuple[str, dict]]]:
    """{cluster_id: [(cluster run id, history row), …]} in run order."""
    with store.connect() as conn:
        rows = conn.execute(sa.select(cluster_history).order_by(cluster_history.c.at)).mappings().all()
    trend: dict[int, list] = {}
    for row in rows:
        trend.setdefault(row["cluster_id"], []).append((row["run_id"], dict(row)))
    return trend


def _trend(store: Store) -> str:
    """The failure-report's trend chart (curation.report), for the clusters ranked highest now."""
    from curation.cluster import rank_clusters
    from curation.report.data import cluster_trend
    from curation.report.html import colour_of, trend

    rows = rank_clusters(store, top=10)
    if not rows:
        return "<p>No clustering runs yet.</p>"
    return trend(cluster_trend(store), rows, colour_of([r["id"] for r in rows]), width=1000)


def _labels(store: Store) -> dict[int, str]:
    from curation.cluster import rank_clusters

    return {r["id"]: (r.get("label") or f"cluster {r['id']} (hidden: too few users)") for r in rank_clusters(store)}


def _cluster_run(run: dict | None) -> str | None:
    if run is None:
        return None
    return ((run["steps"].get("cluster") or {}).get("figures") or {}).get("run_id")


def _changes(this: dict, previous: dict | None, trend: dict) -> list[dict]:
    now_run, before_run = _cluster_run(this), _cluster_run(previous)
    total = lambda run: sum(dict(p).get(run, {}).get("failures", 0) for p in trend.values()) or 1
    total_now, total_before = total(now_run), total(before_run)
    changes = []
    for cid, points in trend.items():
        runs = dict(points)
        now = runs.get(now_run)
        if now is None or not now["failures"]:
            continue
        before = runs.get(before_run) if before_run else None
        if before is None:
            kind = "new"
        elif (now["failures"] - before["failures"] >= MIN_NEW_FAILURES
              and now["failures"] / total_now >= GROWTH * before["failures"] / total_before):
            kind = "growing"
        else:
            kind = None
        if kind:
            changes.append({"id": cid, "kind": kind, "now": now, "before": before})
    return sorted(changes, key=lambda c: -(c["now"]["failure_rate"] or 0))[:SHOWN]


def _steps_table(run: dict, writing: str = "report") -> str:
    """The run's steps; `writing` is the step writing this report, still running while it does."""
    rows = []
    for name, step in run["steps"].items():
        figures = ", ".join(f"{k}: {v}" for k, v in (step["figures"] or {}).items()
                            if isinstance(v, (int, float, str)) and len(str(v)) < 60)
        note = step.get("message", "").splitlines()[0] if step.get("message") else ""
        if name == "promote" and (step["figures"] or {}).get("reason"):
            note = step["figures"]["reason"]
        status, seconds = step["status"], f"{(step['seconds'] or 0):.1f}s"
        if name == writing and status == "running":
            status, seconds, note = "this step", "—", "writes this report"
        rows.append(f"<tr><td>{_e(name)}</td><td class='{_e(status.replace(' ', '-'))}'>{_e(status)}</td>"
                    f"<td>{seconds}</td><td>{_e(figures[:300])}</td><td>{_e(note[:300])}</td></tr>")
    return ("<h2>Steps</h2><table><tr><th>step</th><th>status</th><th>time</th><th>figures</th><th>note</th></tr>"
            + "".join(rows) + "</table>")


def _changes_table(changes: list[dict], labels: dict[int, str]) -> str:
    if not changes:
        return "<p>No new or growing failure clusters since the previous run.</p>"
    rows = "".join(
        f"<tr><td>{c['id']}</td><td>{_e(labels.get(c['id'], ''))}</td><td>{c['kind']}</td><td>{c['now']['size']}</td>"
        f"<td>{c['now']['failures']}</td><td>{(c['now']['failure_rate'] or 0):.1%}</td>"
        f"<td>{'—' if c['before'] is None else c['before']['failures']}</td></tr>"
        for c in changes)
    return ("<table id='changes'><tr><th>cluster</th><th>label</th><th>change</th><th>size</th><th>failures</th>"
            "<th>failure rate</th><th>failures before</th></tr>" + rows + "</table>")


def _annotation(runs: list[dict], this: dict) -> str:
    rows = []
    for run in reversed([r for r in runs if r["loop"] == this["loop"]]):
        push = (run["steps"].get("push") or {}).get("figures") or {}
        pull = (run["steps"].get("pull") or {}).get("figures") or {}
        agreement = pull.get("agreement") or {}
        before = (agreement.get("before_filter") or {}).get("overall") or {}
        after = (agreement.get("after_filter") or {}).get("overall") or {}
        rows.append(f"<tr><td>{_e(run['run_id'][:8])}</td><td>{push.get('pushed', '—')}</td><td>{pull.get('responses', '—')}</td>"
                    f"<td>{pull.get('pulled', '—')}</td><td>{agreement.get('disagreement', '—')}</td>"
                    f"<td>{_fmt(before.get('kappa'))} / {_fmt(after.get('kappa'))}</td>"
                    f"<td>{_fmt(before.get('alpha'))} / {_fmt(after.get('alpha'))}</td></tr>")
    return ("<p>Agreement over all submitted responses so far, before / after dropping records whose annotators disagree "
            "by more than 2 points (HelpSteer2's rule).</p><table id='annotation'><tr><th>run</th><th>records pushed</th>"
            "<th>responses pulled</th><th>records rated</th><th>flagged for disagreement</th><th>quadratic κ</th>"
            "<th>Krippendorff α (ordinal)</th></tr>" + "".join(rows) + "</table>")


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "—"


def _models(store: Store) -> list[dict]:
    from loops.tables import promotions, reward_models

    with store.connect() as conn:
        models = [dict(r) for r in conn.execute(sa.select(reward_models).order_by(reward_models.c.created_at)).mappings()]
        decisions = {r["challenger"]: dict(r) for r in conn.execute(sa.select(promotions).order_by(promotions.c.id)).mappings()}
    for m in models:
        m["metrics"] = loads(m["metrics"]) or {}
        m["decision"] = decisions.get(m["version"])
    return models


def _models_section(models: list[dict]) -> str:
    if not models:
        return "<p>No reward model trained yet.</p>"
    rows = []
    for m in models:
        d = m["decision"] or {}
        figures = loads(d.get("figures")) if d.get("figures") else {}
        acc = figures.get("challenger_accuracy", m["metrics"].get("eval_accuracy"))
        rows.append(f"<tr><td>{_e(m['version'])}</td><td>{_e(m['loss'])}</td><td>{m['metrics'].get('train_pairs', '—')}</td>"
                    f"<td>{_fmt(acc)}</td><td>{_fmt(figures.get('champion_accuracy'))}</td>"
                    f"<td>{_fmt(figures.get('length_baseline'))}</td><td>{_e(m['status'])}</td>"
                    f"<td>{_e(figures.get('reason') or d.get('decision', '—'))}</td></tr>")
    return ("<p>The gate (docs/reward-models.md) compares each new model with the champion and with the "
            "“longer answer wins” baseline on the same fixed gate pairs.</p>"
            "<table id='models'><tr><th>version</th><th>loss</th><th>train pairs</th><th>gate accuracy</th>"
            "<th>champion then</th><th>longer-answer baseline</th><th>status</th><th>gate decision</th></tr>"
            + "".join(rows) + "</table>")
