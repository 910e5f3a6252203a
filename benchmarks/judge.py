"""The judge as evidence: lift@100 of Curate's ranking, of the judge alone and of naive, against the judge's quality.

    python benchmarks/judge.py [--sets oasst,sample] [--noise 0.6 1.2 2 3] [--seeds 0 1 2] [--rounds 3]
                               [--routing-noise 1.2 --routing-seeds 0 1 2 3 4] [--out figures.png|figures.md]

For each set (oasst: ../shared/data/oasst1-en-validation with its review labels; sample: 1,000 conversations of
curation.synthetic traffic with its planted failures), ingested, embedded and clustered once
(benchmarks/failure_learning.py `prepare`), and for each judge noise σ and seed: the simulated judge
(benchmarks/simulated_judge.py, the judge's noise drawn with the seed) rates every conversation, its answers are
stored as `curate judge` stores them, the failure signals are scored again (the prior then holds the judge's
verdict), and three rankings are measured by lift@100 among the labelled conversations not yet rated:
- Curate: the scorer in force (the prior with no ratings; the learned failure model, judge features included, once
  it passes its gate);
- judge alone: 8 − helpfulness − correctness of the judge's answer;
- naive: thumbs-down + red-flag count.
Ties count at their expected value (a random order within the tie). Then `--rounds` rounds of 100 ratings routed by
the default mix (benchmarks/failure_learning.py `simulate`: the simulated annotator rates, `import_ratings` imports,
`loops.failures.refresh` refits), measured after each, among the unrated and on a held-out part (`--held-out`, whole
oasst1 trees that routing never picks; lift@30 there, i.e. lift@100 scaled to a 30% part). κ is the judge's
quadratic κ with the truth on helpfulness.

Routing (`--routing-noise`): at that noise, the default mix against the same mix with a `disagree` share (30%
failure, 30% uncertain, 20% disagree, 20% explore), lift@100 among the unrated after 100 and 300 ratings, mean of
`--routing-seeds`. `--out`: a PNG plot when matplotlib is installed and the name ends in .png, else a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from failure_learning import held_out_split, lift_at, naive, prepare, sample_rates, simulate, trees, truth  # noqa: E402
from simulated_judge import SimulatedJudge, helpfulness_kappa, write_judgements  # noqa: E402

K = 100


def judge_scores(judge: SimulatedJudge) -> dict[str, float]:
    """The judge-only ranking: 8 − helpfulness − correctness of its answer."""
    return {c: float(8 - judge.rate(c)["helpfulness"] - judge.rate(c)["correctness"]) for c in judge.messages}


def judged_copy(base: str, home: str, noise: float, seed: int) -> tuple[SimulatedJudge, dict]:
    """Copy `base` to `home`, store the simulated judge's answers, rescore the signals; returns the judge and the
    no-ratings figures' inputs."""
    from curation.signals import score_failures
    from curation.store import Store

    shutil.copytree(base, home, dirs_exist_ok=True)
    store = Store.open(home)
    judge = SimulatedJudge.for_store(store, noise, seed)
    write_judgements(store, judge)
    score_failures(store, progress=False)
    store.dispose()
    return judge, judge_scores(judge)


def no_ratings(home: str, low: dict[str, bool], judged: dict[str, float]) -> dict:
    from curation.signals import load_scores
    from curation.store import Store

    store = Store.open(home)
    prior = {c: s for c, (s, _) in load_scores(store).items()}
    thumbs = naive(store)
    store.dispose()
    ids = sorted(low)
    y = np.array([low[c] for c in ids])
    lift = lambda sc: lift_at(np.array([float(sc.get(c, 0.0)) for c in ids]), y, K)
    return {"ratings": 0, "lift": lift(prior), "judge": lift(judged), "naive": lift(thumbs), "scorer": "prior"}


def sweep(base: str, low: dict, rates: dict | None, tree: dict, noises: list[float], seeds: list[int], rounds: int,
          held_share: float) -> list[dict]:
    """Per noise level: κ, and per number of ratings the mean lift of Curate, judge alone and naive over seeds, among
    the unrated and (after ratings) on the held-out part."""
    from annotations.routing import FailureFirst

    out = []
    for noise in noises:
        per: dict[int, list[dict]] = {}
        kappas = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as home:
                judge, judged = judged_copy(base, home, noise, seed)
                kappas.append(helpfulness_kappa(judge))
                per.setdefault(0, []).append(no_ratings(home, low, judged))
                held = held_out_split(low, tree, held_share, seed) if held_share else set()
                for row in simulate(home, FailureFirst(random_state=seed), rounds, 100, K, low, held, rates=rates,
                                    others={"judge": judged}) if rounds else []:
                    if held:
                        row["held_lift"], row["held_judge"], row["held_naive"] = (
                            row["held"]["scorer_lift"], row["held"]["judge_lift"], row["held"]["naive_lift"])
                    per.setdefault(row["ratings"], []).append(row)
        for ratings, rows in sorted(per.items()):
            keys = [m for m in ("lift", "judge", "naive", "held_lift", "held_judge", "held_naive") if m in rows[0]]
            out.append({"noise": noise, "kappa": round(float(np.mean(kappas)), 3), "ratings": ratings,
                        **{m: round(float(np.nanmean([r[m] for r in rows])), 3) for m in keys},
                        "learned": sum(r["scorer"].startswith("learned") for r in rows), "seeds": len(rows)})
            print(verdict(out[-1]), flush=True)
    return out


def verdict(row: dict) -> str:
    """One line per measurement, with the target's check: Curate ≥ the better of the two, and ≥ 1.1× both where the
    two are within 10% of each other."""
    best = max(row["judge"], row["naive"])
    close = abs(row["judge"] - row["naive"]) <= 0.1 * best
    met = row["lift"] >= (1.1 * best if close else best)
    held = ""
    if "held_lift" in row:
        held = (f"; held out: Curate {row['held_lift']:.2f} judge {row['held_judge']:.2f} naive "
                f"{row['held_naive']:.2f} ({row['held_lift'] / max(row['held_judge'], row['held_naive']):.2f}×)")
    return (f"  σ {row['noise']:<4g} κ {row['kappa']:.2f}  {row['ratings']:>3} ratings: Curate {row['lift']:.2f}  "
            f"judge {row['judge']:.2f}  naive {row['naive']:.2f}  Curate/best {row['lift'] / best:.2f}  "
            f"{'(within 10%: needs 1.10) ' if close else ''}{'met' if met else 'NOT met'}"
            f"  learned in force {row['learned']}/{row['seeds']}{held}")


def routing(base: str, low: dict, rates: dict | None, tree: dict, noise: float, seeds: list[int], rounds: int,
            held_share: float) -> dict:
    """{mix: {ratings: mean lift among the unrated}} for the default mix and the one with a disagree share."""
    from annotations.routing import FailureFirst

    mixes = {"default (50% failure, 30% uncertain, 20% explore)": {},
             "disagree (30% failure, 30% uncertain, 20% disagree, 20% explore)": {"uncertain": 0.3, "disagree": 0.2}}
    out = {}
    for name, mix in mixes.items():
        rows: dict[int, list[tuple[float, float]]] = {}
        for seed in seeds:
            with tempfile.TemporaryDirectory() as home:
                judged_copy(base, home, noise, seed)
                held = held_out_split(low, tree, held_share, seed) if held_share else set()
                for row in simulate(home, FailureFirst(random_state=seed, **mix), rounds, 100, K, low, held,
                                    rates=rates):
                    rows.setdefault(row["ratings"], []).append((row["lift"], (row.get("held") or {}).get("scorer_lift")))
        out[name] = {r: [round(float(np.nanmean([x for x, _ in v])), 3),
                         round(float(np.nanmean([h for _, h in v if h is not None] or [np.nan])), 3)]
                     for r, v in sorted(rows.items())}
        print(f"  routing {name}: " + ", ".join(f"{r} ratings: among unrated {u:.2f}, held out {h:.2f}"
                                                for r, (u, h) in out[name].items()), flush=True)
    return out


def write_figures(path: str, results: dict) -> str:
    """A PNG (matplotlib) or a Markdown table of lift@100 against κ, per set and number of ratings."""
    path = Path(path)
    try:
        if path.suffix != ".png":
            raise ImportError
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if path.suffix == ".png":
            path = path.with_suffix(".md")
        lines = ["| set | ratings | σ | κ | Curate | judge alone | naive | held out: Curate | judge | naive |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        held = lambda r: " | ".join(f"{r[k]:.2f}" if k in r else "—" for k in ("held_lift", "held_judge", "held_naive"))
        for name, rows in results.items():
            lines += [f"| {name} | {r['ratings']} | {r['noise']:g} | {r['kappa']:.2f} | {r['lift']:.2f} | "
                      f"{r['judge']:.2f} | {r['naive']:.2f} | {held(r)} |"
                      for r in sorted(rows, key=lambda r: (r["ratings"], r["noise"]))]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(path)
    counts = sorted({r["ratings"] for rows in results.values() for r in rows})
    fig, axes = plt.subplots(len(results), len(counts), figsize=(4 * len(counts), 3.2 * len(results)), squeeze=False)
    for i, (name, rows) in enumerate(results.items()):
        for j, n in enumerate(counts):
            part = sorted((r for r in rows if r["ratings"] == n), key=lambda r: r["kappa"])
            ax = axes[i][j]
            for key, label in (("lift", "Curate"), ("judge", "judge alone"), ("naive", "naive")):
                ax.plot([r["kappa"] for r in part], [r[key] for r in part], marker="o", label=label)
            ax.set_title(f"{name}, {n} ratings")
            ax.set_xlabel("judge's quadratic κ (helpfulness)")
            ax.set_ylabel("lift@100")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path)
    return str(path)


def prepared(root: str, name: str, sample_n: int) -> tuple[str, dict, dict | None, dict, str]:
    """The set's embedded, clustered store under `root`/`name`, prepared once and reused by later runs."""
    from curation.store import Store

    base = Path(root) / name
    if not (base / "curate.db").exists():
        base.mkdir(parents=True, exist_ok=True)
        low, tree, rates, line = prepare(str(base), name, sample_n)
        return str(base), low, rates, tree, line
    store = Store.open(str(base))
    low, rates = (truth(store), None) if name == "oasst" else sample_rates(store)
    tree = trees(store)
    store.dispose()
    return str(base), low, rates, tree, f"{name}: reused {base} ({len(low)} labelled conversations)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="oasst,sample")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.6, 1.2, 2.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 100 ratings (0: no ratings only)")
    parser.add_argument("--routing-noise", type=float, default=None, help="compare routing mixes at this noise")
    parser.add_argument("--routing-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--sample-n", type=int, default=1000)
    parser.add_argument("--held-out", type=float, default=0.3,
                        help="share of the labelled conversations (whole trees) never routed, measured after ratings")
    parser.add_argument("--out", default=None, help="figures: .png (matplotlib) or a Markdown table")
    parser.add_argument("--bases", default=None, help="keep the prepared stores here and reuse them (default: a "
                        "temporary folder)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    started, results = time.perf_counter(), {}
    for name in args.sets.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            base, low, rates, tree, line = prepared(args.bases or scratch, name, args.sample_n)
            print(line, flush=True)
            alone = no_ratings(base, low, {})
            print(f"  no judge, no ratings: Curate (the prior) {alone['lift']:.2f}, naive {alone['naive']:.2f}", flush=True)
            results[name] = sweep(base, low, rates, tree, args.noise, args.seeds, args.rounds, args.held_out)
            if args.routing_noise is not None:
                routing(base, low, rates, tree, args.routing_noise, args.routing_seeds, 3, args.held_out)
    if args.out:
        print(f"wrote {write_figures(args.out, results)}")
    print(f"load average {os.getloadavg()[0]:.2f} at end; {time.perf_counter() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
