"""`curate report`: one self-contained HTML file (inline SVG, no scripts, no network) that opens offline.

    from curation.report import write_report
    write_report(store, "report.html")
"""
from __future__ import annotations

from pathlib import Path

from curation.cluster.rank import MIN_USERS
from curation.errors import InputError
from curation.report.data import gather
from curation.report.html import render
from curation.store import Store, utcnow


def write_report(store: Store, out: str | Path, top: int = 20, max_points: int = 5_000, projection: str = "pca",
                 min_users: int = MIN_USERS, judge: dict | None = None) -> dict:
    """Write the report; returns {"out", "clusters", "shown", "total_clusters", "points", "bytes"}.

    `judge`: the LLM judge's agreement with people (`loops.failures.agreement.judge_agreement`, which the CLI
    passes in: curation does not read people's ratings), shown as its own section when given.

    "clusters" and "shown" are the clusters the report shows (the top `top`), "total_clusters" all of them.
    """
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{out}: the report is HTML; give a path ending in .html")
    data = gather(store, top=top, max_points=max_points, projection=projection, min_users=min_users)
    data["judge"] = judge
    text = render(data, generated=utcnow()[:19].replace("T", " ") + " UTC")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror}; choose another --out") from None
    return {"out": str(out), "clusters": len(data["top"]), "shown": len(data["top"]),
            "total_clusters": len(data["clusters"]), "points": len(data["points"]), "bytes": len(text.encode())}


__all__ = ["write_report"]
