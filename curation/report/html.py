"""Render the report as one self-contained HTML file: inline CSS and inline SVG drawn here, no scripts, no network.

Every plot is an `<svg class="plot">` with a `data-marks` count, so a test can check that each one was drawn, and
every map has a `.legend` whose `data-for` names it. Text is laid out inside each SVG's box (labels are truncated
and margins sized for the longest value), so nothing is clipped at any page width.
"""
from __future__ import annotations

from html import escape

from curation.signals import DEFAULT_THRESHOLD

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#1f77b4", "#17becf", "#8c564b"]
OTHER = "#c8c8c8"
LABEL = 44  # characters of a cluster label in a chart; longer ones end in "…"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 12px}.row{display:flex;gap:20px;flex-wrap:wrap}.card{flex:1;min-width:300px}
.kpi{display:inline-block;margin-right:28px}.kpi b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:5px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.num{text-align:right;white-space:nowrap}.muted{color:#777}.sig{color:#c0392b;font-weight:600}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;flex:none}
svg{background:#fff;max-width:100%;height:auto;display:block}text{font:11px system-ui,sans-serif;fill:#333}
text.axis{fill:#555}text.title{font-weight:600}text.id{font-weight:700;fill:#111;stroke:#fff;stroke-width:3px;paint-order:stroke}
.legend{margin:8px 0 0;padding:6px 8px;border:1px solid #eee;font-size:12px;column-gap:16px}
ul.legend{list-style:none;columns:2 240px}ul.legend li{display:flex;align-items:baseline;break-inside:avoid;margin:1px 0}
.ex{font-size:12px;margin:6px 0 2px;padding:4px 6px;border-left:3px solid #e15759;background:#fafafa}
.ex div{margin:1px 0;overflow-wrap:anywhere}.ex .who{color:#777;font-weight:600;margin-right:4px}.ex .signals{color:#555}
.empty{color:#555;background:#f6f6f6;padding:10px 12px;border-radius:4px}
"""


def colour_of(cluster_ids: list[int]) -> dict[int, str]:
    """Colours for the first clusters (as many as the palette has); the rest are drawn grey."""
    return {cid: PALETTE[i] for i, cid in enumerate(cluster_ids[: len(PALETTE)])}


def _label(row: dict) -> str:
    if row["hidden"]:
        return f"cluster {row['id']} (hidden: too few users)"
    return row["label"] or f"cluster {row['id']}"


def _short(text: str, n: int = LABEL) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def ramp(value: float) -> str:
    """Failure score 0 → blue, 0.5 → light grey, 1 → red."""
    v = min(1.0, max(0.0, value))
    a, b = ((69, 117, 180), (230, 230, 230)) if v < 0.5 else ((230, 230, 230), (215, 48, 39))
    t = v * 2 if v < 0.5 else (v - 0.5) * 2
    return "#%02x%02x%02x" % tuple(int(a[i] + (b[i] - a[i]) * t) for i in range(3))


def _svg(plot_id: str, marks: int, width: int, height: int, body: str, label: str) -> str:
    return (f'<svg class="plot" id="{plot_id}" data-marks="{marks}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">{body}</svg>')


def scatter(points: list[dict], colour, title: str, plot_id: str, labelled: dict[int, str] | None = None,
            width: int = 540, height: int = 400) -> str:
    """A 2-D map. Grey points are drawn first and smaller; `labelled` clusters get their id at their median point."""
    if not points:
        return _svg(plot_id, 0, width, 40, '<text x="8" y="24">no vectors to map</text>', title)
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 14

    def sx(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    # grey under coloured, then failing on top
    ordered = sorted(points, key=lambda p: (colour(p) != OTHER, p["failure"]))
    marks = "".join(
        f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="{2.0 if colour(p) == OTHER else 2.8}" '
        f'fill="{colour(p)}" fill-opacity="{0.55 if colour(p) == OTHER else 0.85}">'
        f'<title>cluster {p["cluster"]} · failure {p["failure"]:.2f}</title></circle>' for p in ordered)
    ids = []
    for cid in labelled or {}:
        mine = [p for p in points if p["cluster"] == cid]
        if mine:
            x = sorted(sx(p["x"]) for p in mine)[len(mine) // 2]
            y = sorted(sy(p["y"]) for p in mine)[len(mine) // 2]
            x, y = min(max(x, 12.0), width - 24.0), min(max(y, 16.0), height - 6.0)
            ids.append(f'<text class="id" x="{x:.1f}" y="{y:.1f}" text-anchor="middle">{cid}</text>')
    frame = f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="#ddd"/>'
    return _svg(plot_id, len(points), width, height, frame + marks + "".join(ids), title)


def cluster_legend(rows: list[dict], colours: dict[int, str], totals: dict) -> str:
    """The left map's key: each coloured cluster's name and size, and what the grey points are."""
    coloured = [r for r in rows if r["id"] in colours]
    items = [f'<li><span class="sw" style="background:{colours[r["id"]]}"></span><span><b>{r["id"]}</b>. '
             f'{escape(_short(_label(r)))} <span class="muted">({r["size"]:,}, {r["failure_rate"]:.0%} failing)'
             f'</span></span></li>' for r in coloured]
    rest = totals["clusters"] - len(coloured)
    grey = totals["conversations"] - sum(r["size"] for r in coloured)
    if rest:
        items.append(f'<li><span class="sw" style="background:{OTHER}"></span><span>grey: the other {rest:,} '
                     f'cluster{"s" if rest != 1 else ""} ({grey:,} conversations), not among the top {len(coloured)}'
                     f'</span></li>')
    return f'<ul class="legend" data-for="map-cluster">{"".join(items)}</ul>'


def failure_legend(width: int = 300) -> str:
    """The right map's key: the colour scale of the failure score, with the threshold marked."""
    left, right, bar = 8, width - 8, 12
    stops = "".join(f'<stop offset="{v:.2f}" stop-color="{ramp(v)}"/>' for v in (0, 0.25, 0.5, 0.75, 1))

    def sx(v: float) -> float:
        return left + v * (right - left)

    ticks = "".join(f'<line x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{18 + bar}" y2="{22 + bar}" stroke="#555"/>'
                    f'<text class="axis" x="{sx(v):.1f}" y="{35 + bar}" text-anchor="{a}">{v:g}</text>'
                    for v, a in ((0, "start"), (DEFAULT_THRESHOLD, "middle"), (1, "end")))
    body = (f'<defs><linearGradient id="failure-ramp">{stops}</linearGradient></defs>'
            f'<text class="title" x="{left}" y="12">failure score (fails at ≥ {DEFAULT_THRESHOLD:g})</text>'
            f'<rect x="{left}" y="18" width="{right - left}" height="{bar}" fill="url(#failure-ramp)" stroke="#bbb"/>'
            f'<line x1="{sx(DEFAULT_THRESHOLD):.1f}" x2="{sx(DEFAULT_THRESHOLD):.1f}" y1="15" y2="{21 + bar}" '
            f'stroke="#111" stroke-dasharray="2 2"/>{ticks}')
    return (f'<div class="legend" data-for="map-failure"><svg class="scale" width="{width}" height="{40 + bar}" '
            f'viewBox="0 0 {width} {40 + bar}" role="img" aria-label="failure score colour scale">{body}</svg></div>')


def rate_bars(rows: list[dict], base_rate: float, colours: dict[int, str], width: int = 1100) -> str:
    """Failure rate per cluster, highest first: a bar, its 95% Wilson interval as a whisker, the overall rate dashed."""
    rows = sorted(rows, key=lambda r: (-r["failure_rate"], -r["size"], r["id"]))
    left, right, step, top = 300, 120, 22, 24
    height = top + step * len(rows) + 46
    span = width - left - right
    axis_y = top + step * len(rows) + 4

    def sx(v: float) -> float:
        return left + v * span

    anchor = "end" if base_rate > 0.8 else "start"
    shift = -4 if base_rate > 0.8 else 4
    parts = [f'<line x1="{sx(base_rate):.1f}" y1="16" x2="{sx(base_rate):.1f}" y2="{axis_y}" stroke="#333" '
             f'stroke-dasharray="4 3"/><text x="{sx(base_rate) + shift:.1f}" y="12" text-anchor="{anchor}">'
             f'overall {base_rate:.1%}</text>',
             f'<line x1="{left}" x2="{left + span}" y1="{axis_y}" y2="{axis_y}" stroke="#999"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{sx(tick):.1f}" x2="{sx(tick):.1f}" y1="{axis_y}" y2="{axis_y + 4}" stroke="#999"/>'
                     f'<text class="axis" x="{sx(tick):.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:.0%}</text>')
    parts.append(f'<text class="axis title" x="{left + span / 2:.1f}" y="{axis_y + 36}" text-anchor="middle">'
                 f'failure rate: share of the cluster\'s conversations with failure score ≥ {DEFAULT_THRESHOLD:g}</text>')
    for i, r in enumerate(rows):
        y = top + i * step
        parts.append(f'<text x="4" y="{y + 12}">{r["id"]}. {escape(_short(_label(r)))}</text>')
        parts.append(f'<rect class="bar" x="{left}" y="{y + 2}" width="{max(1.0, r["failure_rate"] * span):.1f}" height="13" '
                     f'fill="{colours.get(r["id"], OTHER)}"><title>{r["failures"]}/{r["size"]} = {r["failure_rate"]:.1%} '
                     f'(95% CI {r["ci_low"]:.1%}–{r["ci_high"]:.1%})</title></rect>')
        lo, hi = sx(r["ci_low"]), sx(r["ci_high"])
        parts.append(f'<line x1="{lo:.1f}" y1="{y + 8.5}" x2="{hi:.1f}" y2="{y + 8.5}" stroke="#111" stroke-width="1.5"/>'
                     f'<line x1="{lo:.1f}" y1="{y + 4}" x2="{lo:.1f}" y2="{y + 13}" stroke="#111"/>'
                     f'<line x1="{hi:.1f}" y1="{y + 4}" x2="{hi:.1f}" y2="{y + 13}" stroke="#111"/>')
        parts.append(f'<text x="{width - 4}" y="{y + 12}" text-anchor="end">{r["failure_rate"]:.0%} · n={r["size"]:,}</text>')
    return _svg("rates", len(rows), width, height, "".join(parts), "failure rate by cluster")


def _spread(ys: list[float], gap: float, low: float, high: float) -> list[float]:
    """Label positions near `ys` (sorted ascending), at least `gap` apart where they fit, within [low, high]."""
    out: list[float] = []
    for y in ys:
        out.append(max(y, out[-1] + gap) if out else max(y, low))
    if out and out[-1] > high:  # pushed past the bottom: push back up, only as far as needed
        out[-1] = high
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    if out and out[0] < low:  # more labels than the height holds at `gap`: spread them evenly
        step = min(gap, (high - low) / max(1, len(out) - 1))
        out = [low + i * step for i in range(len(out))]
    return out


def trend(history: dict, rows: list[dict], colours: dict[int, str], width: int = 1100, height: int = 280) -> str:
    """Failure rate of the coloured top clusters across clustering runs, one labelled line each.

    With fewer than two runs there is no trend to draw, and the section says so instead.
    """
    runs = history["runs"]
    if len(runs) < 2:
        when = f" ({escape(runs[0][:16].replace('T', ' '))})" if runs else ""
        return (f'<p class="empty" id="trend">The trend needs at least two clustering runs; there '
                f'{"is one" if runs else "is none"} so far{when}. It fills in as <code>curate cluster</code> runs again '
                f'on new traffic (the loop does so each run).</p>')
    shown = [r for r in rows if r["id"] in colours and any(v is not None for v in history["series"].get(r["id"], []))]
    left, right, top, bottom = 46, 230, 22, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([v for r in shown for v in history["series"][r["id"]] if v is not None] + [0.05])

    def sx(i: int) -> float:
        return left + i / (len(runs) - 1) * plot_w

    def sy(v: float) -> float:
        return top + plot_h - v / peak * plot_h

    parts = ['<text class="axis title" x="4" y="12">failure rate</text>']
    for frac in (0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(peak * frac):.1f}" y2="{sy(peak * frac):.1f}" stroke="#eee"/>'
                     f'<text class="axis" x="{left - 6}" y="{sy(peak * frac) + 4:.1f}" text-anchor="end">{peak * frac:.0%}</text>')
    labelled = {0, len(runs) - 1} | (set(range(len(runs))) if len(runs) <= 6 else set())
    stamp = 16 if len({run[:16] for run in runs}) == len(runs) else 19  # seconds only when minutes repeat
    for i, run in enumerate(runs):
        anchor = "start" if i == 0 else "end" if i == len(runs) - 1 else "middle"
        parts.append(f'<line x1="{sx(i):.1f}" x2="{sx(i):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#999"/>'
                     + (f'<text class="axis" x="{sx(i):.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}">'
                        f'{escape(run[:stamp].replace("T", " "))}</text>' if i in labelled else ""))
    parts.append(f'<text class="axis title" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                 f'clustering runs, oldest to newest ({len(runs)} runs)</text>')
    ends = []
    for r in shown:
        values = history["series"][r["id"]]
        pts = [(sx(i), sy(v)) for i, v in enumerate(values) if v is not None]
        colour = colours[r["id"]]
        title = f'<title>{escape(_label(r))}</title>'
        if len(pts) > 1:
            parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}">{title}</polyline>')
        parts += [f'<circle class="series-point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">{title}</circle>' for x, y in pts]
        ends.append((pts[-1][1], pts[-1][0], r, colour))
    ends.sort(key=lambda e: e[0])
    for (y, x, r, colour), ly in zip(ends, _spread([e[0] for e in ends], 13, top, top + plot_h)):
        lx = left + plot_w + 12
        parts.append(f'<line class="leader" x1="{x + 4:.1f}" y1="{y:.1f}" x2="{lx - 2:.1f}" y2="{ly:.1f}" stroke="{colour}" '
                     f'stroke-width="1"/><text class="series-label" x="{lx:.1f}" y="{ly + 4:.1f}">'
                     f'{r["id"]}. {escape(_short(_label(r), 32))}</text>')
    return _svg("trend", len(shown), width, height, "".join(parts), "failure rate across clustering runs")


def _example(e: dict) -> str:
    signals = ", ".join(f'<b>{escape(s["name"])}</b> ({escape(str(s.get("why", "")))})' for s in e["signals"])
    follow = f'<div><span class="who">then the user:</span>{escape(e["follow_up"])}</div>' if e["follow_up"] else ""
    return (f'<div class="ex"><div><span class="who">user:</span>{escape(e["prompt"]) or "<i>(no user turn)</i>"}</div>'
            f'<div><span class="who">assistant:</span>{escape(e["reply"]) or "<i>(no reply)</i>"}</div>{follow}'
            f'<div class="signals"><span class="who">failure score {e["failure_score"]:.2f}; signals:</span>'
            f'{signals or "none fired"}</div></div>')


def table(rows: list[dict], colours: dict[int, str]) -> str:
    head = ("<tr><th>#</th><th>cluster</th><th>size</th><th>failures</th><th>rate (95% CI)</th><th>lift</th>"
            "<th>q (BH)</th><th>keywords, and examples: the user's turn, the reply that failed, what the user said "
            "next, the signals that fired</th></tr>")
    body = []
    for rank, r in enumerate(rows, 1):
        sw = f'<span class="sw" style="background:{colours.get(r["id"], OTHER)}"></span>'
        examples = "".join(_example(e) for e in r.get("shown_examples", []))
        keywords = escape(", ".join(r["keywords"])) if not r["hidden"] else '<span class="muted">hidden: fewer users than the privacy threshold</span>'
        lift = "–" if r["lift"] is None else f'{r["lift"]:.2f}×'
        q_text = "<0.001" if r["q_value"] < 0.001 else f'{r["q_value"]:.2g}'
        q = f'<span class="{"sig" if r["significant"] else ""}">{q_text}</span>'
        body.append(f'<tr><td class="num">{rank}</td><td>{sw}{r["id"]}. {escape(_label(r))}</td>'
                    f'<td class="num">{r["size"]:,}</td><td class="num">{r["failures"]:,}</td>'
                    f'<td class="num">{r["failure_rate"]:.1%} ({r["ci_low"]:.1%}–{r["ci_high"]:.1%})</td>'
                    f'<td class="num">{lift}</td><td class="num">{q}</td><td>{keywords}{examples}</td></tr>')
    return f'<table id="clusters">{head}{"".join(body)}</table>'


def render(data: dict, title: str = "Curate failure report", generated: str = "") -> str:
    top, totals = data["top"], data["totals"]
    colours = colour_of([r["id"] for r in top])
    shown = f"the top {len(top)} of {totals['clusters']:,}" if len(top) < totals["clusters"] else f"all {len(top)}"
    by_cluster = scatter(data["points"], lambda p: colours.get(p["cluster"], OTHER), "map by cluster", "map-cluster",
                         labelled=colours)
    by_failure = scatter(data["points"], lambda p: ramp(p["failure"]), "map by failure score", "map-failure")
    kpis = "".join(f'<span class="kpi"><b>{v}</b>{k}</span>' for k, v in (
        ("conversations", f'{totals["conversations"]:,}'), ("failing", f'{totals["failures"]:,} ({totals["failure_rate"]:.1%})'),
        ("clusters", totals["clusters"]), ("fail significantly more often", totals["significant"])))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><h1>{escape(title)}</h1><p class="sub">Generated {escape(generated)} by <code>curate report</code>.
{_fails_rule(data.get("scorer"))} Clusters are ranked by significance
(Benjamini–Hochberg q ≤ 0.05 first, in red), then by conservative lift (the lower end of the failure rate's 95% interval
over the overall rate) times the order of magnitude of the size; this report shows {shown} clusters.</p>
<div>{kpis}</div>
<h2>Map of conversations</h2><p class="sub">Each dot is a conversation (a sample of at most {len(data["points"]):,}),
projected to 2-D; nearby dots have similar embeddings. Left: the top {len(colours)} clusters in colour, numbered at
their centre; the other clusters are grey. Right: the same dots by failure score.</p>
<div class="row"><div class="card">{by_cluster}{cluster_legend(top, colours, totals)}</div>
<div class="card">{by_failure}{failure_legend()}</div></div>
<h2>Failure rate by cluster</h2><p class="sub">The same {shown} clusters as the table below, sorted here by failure
rate (the table keeps the ranking, which also weighs how sure each rate is and how large the cluster is). Bars:
failure rate; whiskers: 95% Wilson interval; dashed line: the overall rate; n: conversations in the cluster.</p>
{rate_bars(top, totals["failure_rate"], colours)}
<h2>Trend across runs</h2><p class="sub">Failure rate of the top {len(colours)} clusters at each <code>curate cluster</code> run.</p>
{trend(data["history"], top, colours)}
<h2>Failure clusters: {shown}, by rank</h2>{table(top, colours)}
{scorer_section(data.get("scorer"), data.get("fits") or [])}
{judge_section(data.get("judge"))}
</body></html>
"""


def _fails_rule(scorer: dict | None) -> str:
    if scorer and scorer["name"] == "learned":
        return (f"Ranked by the learned failure model v{scorer['version']} (see the end of this report): a cluster's "
                "failures are the sum of its conversations' calibrated P(failure).")
    return f"A conversation fails when its failure score is at least {DEFAULT_THRESHOLD:g}."


def scorer_section(scorer: dict | None, fits: list[dict]) -> str:
    """Which scorer ranked the list and why, and the learned failure model's learning curve (one row per fit)."""
    if not scorer:
        return ""
    parts = [f'<h2>Which scorer ranked this list</h2><p class="sub"><b>{escape(scorer["description"])}</b>. '
             f'Why: {escape(scorer["reason"])}.</p>']
    if fits:
        rows = "".join(
            f"<tr><td>v{f['version']}</td><td>{f['n_ratings']}</td><td>{f['n_failures']}</td><td>{f['ap']}</td>"
            f"<td>{f['prior_ap']}</td><td>{f['lift'].get('100', f['lift'].get('50', '-'))}</td>"
            f"<td>{f['prior_lift'].get('100', f['prior_lift'].get('50', '-'))}</td><td>{f['brier']}</td>"
            f"<td>{'promoted' if f['promoted'] else 'prior kept'}</td></tr>" for f in fits)
        parts.append('<h2>Learning curve of the failure model</h2><p class="sub">Each fit on the ratings so far, '
                     'cross-validated with folds grouped by prompt: average precision (AP) and lift@100 (lift@50 '
                     'with fewer than 100 ratings) of the model and of the prior on the same rated conversations; '
                     'a fit ranks only when its AP beats the prior\'s.</p><table><tr><th>fit</th><th>ratings</th>'
                     '<th>failures</th><th>AP</th><th>prior AP</th><th>lift</th><th>prior lift</th><th>Brier</th>'
                     f'<th>gate</th></tr>{rows}</table>')
    return "".join(parts)


def judge_section(agreement: dict | None) -> str:
    """The LLM judge against people: quadratic κ per attribute and the failure/not-failure confusion by the rule
    (docs/judge.md, "How to read the κ table"). Empty when the judge and people never rated the same conversation."""
    if not agreement:
        return ""
    kappa = lambda v: "—" if v is None else f"{v:.2f}"
    rows = "".join(f'<tr><td>{escape(a)}</td><td class="num">{kappa(v["kappa"])}</td><td class="num">{v["n"]}</td></tr>'
                   for a, v in agreement["kappa"].items())
    c = agreement["confusion"]
    return (f'<h2>The LLM judge against people</h2><p class="sub">Judge <code>{escape(agreement["judge"])}</code> on the '
            f'{agreement["n"]} conversations that people also rated. Quadratic κ: 1 = agrees with people, 0 = no better '
            'than chance; below about 0.4 its readings are weak evidence, and the learned failure model gives them '
            'little weight. Judge ratings are never counted as human ratings.</p><table id="judge-kappa"><tr>'
            f'<th>attribute</th><th>quadratic κ</th><th>n</th></tr>{rows}</table><p class="sub">Failure by the rule '
            f'<code>{escape(agreement["rule"])}</code>:</p><table id="judge-confusion"><tr><th></th><th>people: fails</th>'
            f'<th>people: passes</th></tr><tr><td>judge: fails</td><td class="num">{c["both fail"]}</td><td class="num">'
            f'{c["judge only"]}</td></tr><tr><td>judge: passes</td><td class="num">{c["people only"]}</td>'
            f'<td class="num">{c["neither"]}</td></tr></table>')
