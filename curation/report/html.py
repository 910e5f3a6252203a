"""Render the report as one self-contained HTML file: inline CSS and inline SVG drawn here, no scripts, no network.

Every plot is an `<svg class="plot">` with a `data-marks` count, so a test can check that each one was drawn.
"""
from __future__ import annotations

from html import escape

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#17becf"]
OTHER = "#c8c8c8"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}.row{display:flex;gap:20px;flex-wrap:wrap}.card{flex:1;min-width:300px}
.kpi{display:inline-block;margin-right:28px}.kpi b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:5px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.num{text-align:right;white-space:nowrap}.muted{color:#888}.sig{color:#c0392b;font-weight:600}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}svg{background:#fff}
.ex{color:#555;font-size:12px;margin-top:3px}text{font:11px system-ui,sans-serif;fill:#333}
"""


def colour_of(cluster_ids: list[int]) -> dict[int, str]:
    return {cid: PALETTE[i % len(PALETTE)] for i, cid in enumerate(cluster_ids[: len(PALETTE)])}


def _label(row: dict) -> str:
    return row["label"] if not row["hidden"] else f"cluster {row['id']} (hidden: too few users)"


def ramp(value: float) -> str:
    """Failure score 0 → blue, 0.5 → light grey, 1 → red."""
    v = min(1.0, max(0.0, value))
    a, b = ((69, 117, 180), (230, 230, 230)) if v < 0.5 else ((230, 230, 230), (215, 48, 39))
    t = v * 2 if v < 0.5 else (v - 0.5) * 2
    return "#%02x%02x%02x" % tuple(int(a[i] + (b[i] - a[i]) * t) for i in range(3))


def scatter(points: list[dict], colour, title: str, plot_id: str, width: int = 540, height: int = 400) -> str:
    if not points:
        return f'<svg class="plot" id="{plot_id}" data-marks="0" width="{width}" height="40"><text x="8" y="24">no vectors to map</text></svg>'
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 14

    def sx(x: float) -> float:
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / ((y1 - y0) or 1) * (height - 2 * pad)

    # failing points last, so they are drawn on top
    ordered = sorted(points, key=lambda p: p["failure"])
    marks = "".join(
        f'<circle cx="{sx(p["x"]):.1f}" cy="{sy(p["y"]):.1f}" r="2.6" fill="{colour(p)}" fill-opacity="0.8">'
        f'<title>cluster {p["cluster"]} · failure {p["failure"]:.2f}</title></circle>' for p in ordered)
    return (f'<svg class="plot" id="{plot_id}" data-marks="{len(points)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" stroke="#ddd"/>{marks}</svg>')


def rate_bars(rows: list[dict], base_rate: float, colours: dict[int, str], width: int = 1100) -> str:
    """Failure rate per cluster: a bar, its 95% Wilson interval as a whisker, and the overall rate as a dashed line."""
    left, right, step = 330, 70, 22
    height = 30 + step * len(rows)
    span = width - left - right

    def sx(v: float) -> float:
        return left + v * span

    parts = [f'<line x1="{sx(base_rate):.1f}" y1="14" x2="{sx(base_rate):.1f}" y2="{height - 4}" stroke="#333" '
             f'stroke-dasharray="4 3"/><text x="{sx(base_rate) + 4:.1f}" y="12">overall {base_rate:.1%}</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{sx(tick) - 8:.1f}" y="{height}" class="muted">{tick:.0%}</text>')
    for i, r in enumerate(rows):
        y = 22 + i * step
        name = escape(_label(r)[:46])
        parts.append(f'<text x="4" y="{y + 12}">{r["id"]}. {name}</text>')
        parts.append(f'<rect class="bar" x="{left}" y="{y + 2}" width="{max(1.0, r["failure_rate"] * span):.1f}" height="13" '
                     f'fill="{colours.get(r["id"], OTHER)}"><title>{r["failures"]}/{r["size"]} = {r["failure_rate"]:.1%} '
                     f'(95% CI {r["ci_low"]:.1%}–{r["ci_high"]:.1%})</title></rect>')
        parts.append(f'<line x1="{sx(r["ci_low"]):.1f}" y1="{y + 8.5}" x2="{sx(r["ci_high"]):.1f}" y2="{y + 8.5}" '
                     f'stroke="#111" stroke-width="1.5"/>'
                     f'<line x1="{sx(r["ci_low"]):.1f}" y1="{y + 4}" x2="{sx(r["ci_low"]):.1f}" y2="{y + 13}" stroke="#111"/>'
                     f'<line x1="{sx(r["ci_high"]):.1f}" y1="{y + 4}" x2="{sx(r["ci_high"]):.1f}" y2="{y + 13}" stroke="#111"/>')
        parts.append(f'<text x="{width - right + 6}" y="{y + 12}">{r["failure_rate"]:.0%} · n={r["size"]}</text>')
    return (f'<svg class="plot" id="rates" data-marks="{len(rows)}" width="{width}" height="{height + 6}" '
            f'viewBox="0 0 {width} {height + 6}">{"".join(parts)}</svg>')


def trend(history: dict, rows: list[dict], colours: dict[int, str], width: int = 1100, height: int = 260) -> str:
    """Failure rate of the top clusters across clustering runs (one line each; a dot when there is one run)."""
    runs = history["runs"]
    left, pad = 50, 24
    lines = []
    drawn = 0
    top = max([v for r in rows for v in history["series"].get(r["id"], []) if v is not None] + [0.05])

    def sx(i: int) -> float:
        return left + (i / max(1, len(runs) - 1)) * (width - left - pad) if len(runs) > 1 else left + (width - left - pad) / 2

    def sy(v: float) -> float:
        return height - pad - v / top * (height - 2 * pad)

    for frac in (0, 0.5, 1):
        lines.append(f'<line x1="{left}" x2="{width - pad}" y1="{sy(top * frac):.1f}" y2="{sy(top * frac):.1f}" stroke="#eee"/>'
                     f'<text x="4" y="{sy(top * frac) + 4:.1f}">{top * frac:.0%}</text>')
    for r in rows:
        values = history["series"].get(r["id"], [])
        pts = [(sx(i), sy(v)) for i, v in enumerate(values) if v is not None]
        if not pts:
            continue
        drawn += 1
        colour = colours.get(r["id"], OTHER)
        title = f'<title>{escape(_label(r))}</title>'
        if len(pts) > 1:
            lines.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" '
                         f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}">{title}</polyline>')
        lines += [f'<circle class="series-point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">{title}</circle>' for x, y in pts]
    if runs:
        lines.append(f'<text x="{left}" y="{height - 4}">{escape(runs[0][:16])}</text>'
                     f'<text x="{width - pad}" y="{height - 4}" text-anchor="end">{escape(runs[-1][:16])} ({len(runs)} runs)</text>')
    return (f'<svg class="plot" id="trend" data-marks="{drawn}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{"".join(lines)}</svg>')


def table(rows: list[dict], colours: dict[int, str]) -> str:
    head = ("<tr><th>#</th><th>cluster</th><th>size</th><th>failures</th><th>rate (95% CI)</th><th>lift</th>"
            "<th>q (BH)</th><th>keywords and examples</th></tr>")
    body = []
    for rank, r in enumerate(rows, 1):
        sw = f'<span class="sw" style="background:{colours.get(r["id"], OTHER)}"></span>'
        examples = "".join(f'<div class="ex">“{escape(e["prompt"][:160])}”</div>' for e in r["examples"][:2])
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
    by_cluster = scatter(data["points"], lambda p: colours.get(p["cluster"], OTHER), "map by cluster", "map-cluster")
    by_failure = scatter(data["points"], lambda p: ramp(p["failure"]), "map by failure score", "map-failure")
    kpis = "".join(f'<span class="kpi"><b>{v}</b>{k}</span>' for k, v in (
        ("conversations", f'{totals["conversations"]:,}'), ("failing", f'{totals["failures"]:,} ({totals["failure_rate"]:.1%})'),
        ("clusters", totals["clusters"]), ("fail significantly more often", totals["significant"])))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><h1>{escape(title)}</h1><p class="sub">Generated {escape(generated)} by <code>curate report</code>.
A conversation fails when its failure score is at least 0.5; clusters are ranked by conservative lift and size,
with Benjamini–Hochberg q-values (red: q ≤ 0.05).</p>
<div>{kpis}</div>
<h2>Map of conversations</h2><p class="sub">Each dot is a conversation (a sample of at most {len(data["points"]):,}),
projected to 2-D. Left: coloured by cluster (the top {len(colours)} clusters in colour). Right: by failure score,
blue (0) to red (1).</p>
<div class="row"><div class="card">{by_cluster}</div><div class="card">{by_failure}</div></div>
<h2>Failure rate by cluster</h2><p class="sub">Bars: failure rate; whiskers: 95% Wilson interval; dashed: overall rate.</p>
{rate_bars(top, totals["failure_rate"], colours)}
<h2>Trend across runs</h2><p class="sub">Failure rate of the top clusters at each <code>curate cluster</code> run.</p>
{trend(data["history"], top, colours)}
<h2>Failure clusters</h2>{table(top, colours)}
</body></html>
"""
