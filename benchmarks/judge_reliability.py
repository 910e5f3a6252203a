"""Can the prior tell how good the judge is without labels? Label-free estimates of the judge's reliability against
the truth, and what a judge weight that follows reliability would reach.

    python benchmarks/judge_reliability.py --bases DIR [--sets oasst,sample] [--noise 0.45 1 3] [--seeds 0 1 2]

For each set (prepared as benchmarks/judge.py prepares it; `--bases` reuses its stores), judge noise σ and seed: the
simulated judge rates every conversation and the signals are scored again. Three scores per conversation: J, the
judge alone (8 − helpfulness − correctness); F, the noisy-OR of the feedback detectors; C, that of every other
detector but the judge (the reply checks); the others, F and C together (the prior without the judge). Printed, mean
over seeds:
- the triplet estimate of the judge's R² with the failure, corr(J,F)·corr(J,C)/corr(F,C), exact when J, F and C
  are independent given the failure, beside the true R² (point-biserial, on the labelled conversations), and
  corr(F,C) against what independence allows, √R²_F·√R²_C;
- lift@100 of k·z(J) + z(others) (z: standardised over the store) for several k, beside the judge alone: the weight a
  label-free estimate would have to find.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from failure_learning import lift_at  # noqa: E402
from judge import judged_copy, prepared  # noqa: E402

KS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)


def noisy_or(signals: list[dict]) -> float:
    """The prior's combination (curation.signals.score.combine) of stored signal rows."""
    from curation.signals.base import Signal
    from curation.signals.score import combine

    return combine([Signal(s["name"], s["value"], "") for s in signals], {s["name"]: s["weight"] for s in signals})


def measure(home: str, judged: dict[str, float], low: dict[str, bool]) -> dict:
    from curation.signals import load_scores
    from curation.signals.feedback import feedback_detectors
    from curation.store import Store

    store = Store.open(home)
    scores = load_scores(store)
    store.dispose()
    feedback = {d.name for d in feedback_detectors()}
    ids = sorted(scores)
    part = lambda keep: np.array([noisy_or([s for s in scores[c][1] if keep(s["name"])]) for c in ids])
    J = np.array([judged[c] for c in ids])
    F, C = part(lambda n: n in feedback), part(lambda n: n not in feedback and n != "judge")
    others = part(lambda n: n != "judge")
    r = np.corrcoef([J, F, C])
    labelled = np.array([c in low for c in ids])
    y = np.array([low[c] for c in ids if c in low], dtype=float)
    true_r2 = lambda x: float(np.corrcoef(x[labelled], y)[0, 1] ** 2)
    z = lambda x: (x - x.mean()) / x.std()
    return {"triplet R² judge": r[0, 1] * r[0, 2] / r[1, 2], "true R² judge": true_r2(J),
            "corr(F,C)": r[1, 2], "independence allows": np.sqrt(true_r2(F) * true_r2(C)),
            "judge alone": lift_at(J[labelled], y, 100),
            **{f"k={k:g}": lift_at((k * z(J) + z(others))[labelled], y, 100) for k in KS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", required=True, help="benchmarks/judge.py's prepared stores (made when missing)")
    parser.add_argument("--sets", default="oasst,sample")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.45, 1.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for name in args.sets.split(","):
        base, low, _, _, line = prepared(args.bases, name, 1000)
        print(line, flush=True)
        for noise in args.noise:
            rows = []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as home:
                    _, judged = judged_copy(base, home, noise, seed)
                    rows.append(measure(home, judged, low))
            print(f"  σ {noise:g}: " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.2f}" for k in rows[0]), flush=True)


if __name__ == "__main__":
    main()
