"""The prior weighs the judge, feedback and the reply checks by their reliability, estimated without labels from how
they agree (curation.signals.sources): on oasst1 with simulated judges of known noise, and on a known model."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.simulated_judge import SimulatedJudge, write_judgements
from curation.ingest import ingest
from curation.signals import load_scores, score_failures
from curation.signals.sources import CATEGORIES, MISSING, category, cell_of, fit_sources, judge_category


def test_categories_are_the_noisy_or_bins_and_the_judges_its_lower_attribute():
    assert category([]) == "none" and category([{"value": 1.0, "weight": -0.5}]) == "success"
    assert category([{"value": 1.0, "weight": 0.3}]) == "b2" and category([{"value": 1.0, "weight": 0.9}]) == "b4"
    assert category([{"value": 1.0, "weight": 0.9}, {"value": 1.0, "weight": -0.5}]) == "b4"
    verdict = lambda h, c: {"model": "m", "helpfulness": h, "correctness": c}
    assert [judge_category(verdict(low, 4)) for low in range(5)] == ["b4", "b3", "b2", "b1", "none"]
    assert judge_category(verdict(4, 1)) == "b3" and judge_category(verdict(None, 2)) == "b2"
    assert judge_category(None) == judge_category(verdict(None, None)) == MISSING
    signals = [{"name": "judge", "value": 1.0, "weight": 0.8}, {"name": "thumbs_up", "value": 1.0, "weight": -0.5}]
    assert cell_of(signals, verdict(0, 0), frozenset({"thumbs_up"})) == "b4|success|none"
    assert cell_of([], None, frozenset()) == f"{MISSING}|none|none"


def test_em_recovers_known_reliabilities_from_agreement_alone():
    """Cells drawn from a known model (the judge far better than the other two): EM, started from a prior that
    trusts all three alike, finds the judge's likelihood ratios close to the true ones."""
    rng = np.random.default_rng(0)
    truth = {"judge": ([0.02, 0.05, 0.05, 0.08, 0.3, 0.5], [0.02, 0.7, 0.2, 0.05, 0.02, 0.01]),
             "feedback": ([0.05, 0.45, 0.1, 0.1, 0.2, 0.1], [0.25, 0.55, 0.08, 0.06, 0.04, 0.02]),
             "checks": ([0.0, 0.7, 0.15, 0.1, 0.05, 0.0], [0.0, 0.85, 0.1, 0.04, 0.01, 0.0])}
    n = 50_000
    y = rng.random(n) < 0.2
    drawn = {s: np.where(y, rng.choice(6, n, p=fail), rng.choice(6, n, p=ok)) for s, (fail, ok) in truth.items()}
    cells: dict[str, list] = {}
    for i in range(n):
        parts = [drawn[s][i] for s in truth]
        fixed = 1 - np.prod([1 - 0.25 * max(0, p - 1) for p in parts])  # the same trust in each source
        entry = cells.setdefault("|".join(CATEGORIES[p] for p in parts), [0, 0.0])
        entry[0] += 1
        entry[1] += fixed
    model = fit_sources({k: tuple(v) for k, v in cells.items()})
    assert model.rate_ == pytest.approx(0.2, abs=0.02)
    for source, (fail, ok) in truth.items():
        for c, p1, p0 in zip(CATEGORIES, fail, ok):
            if p1 > 0.03 and p0 > 0.03:  # the categories seen often enough in both classes
                assert model.llr_[source][c] == pytest.approx(np.log(p1 / p0), abs=0.3), (source, c)
    assert model.llr_["checks"]["b4"] == pytest.approx(0.0, abs=0.05)  # never seen: neutral
    assert model.llr_["judge"]["b4"] > model.llr_["feedback"]["b4"] + 1 and model.llr_["judge"]["none"] < model.llr_["feedback"]["none"] - 1
    assert fit_sources({f"{MISSING}|none|none": (10_000, 100.0), "b4|none|none": (49, 40.0)}) is None  # too few judged


@pytest.fixture
def oasst_store(store, oasst_file):
    ingest(store, [oasst_file], progress=False)
    return store


def lift_at_100(scores: dict[str, float], truth: dict[str, bool]) -> float:
    ids = sorted(truth)
    s = np.array([scores.get(c, 0.0) for c in ids])
    y = np.array([truth[c] for c in ids], dtype=float)
    top = np.argsort(-s, kind="stable")[:100]
    return float(y[top].mean() / y.mean())


def test_on_oasst1_a_sharp_judge_is_estimated_more_reliable_than_a_noisy_one_and_outranks_the_fixed_weights(oasst_store):
    """Real oasst1 conversations and feedback; the judge is the review labels plus seeded noise. The estimate never
    sees a label: only how the judge agrees with the users' emojis and the reply checks."""
    from benchmarks.failure_learning import truth

    store = oasst_store
    low = truth(store)
    found = {}
    for noise in (0.45, 3.0):
        judge = SimulatedJudge.for_store(store, noise, seed=0)
        with store.begin() as conn:
            conn.exec_driver_sql("DELETE FROM judgements")
        write_judgements(store, judge)
        summary = score_failures(store, progress=False)
        scores = {c: s for c, (s, _) in load_scores(store).items()}
        fixed = {c: _fixed(sig) for c, (_, sig) in load_scores(store).items()}
        found[noise] = (summary["sources"]["judge"], lift_at_100(scores, low), lift_at_100(fixed, low))
    (sharp, sharp_lift, sharp_fixed), (noisy, noisy_lift, noisy_fixed) = found[0.45], found[3.0]
    assert sharp["llr"]["b4"] - sharp["llr"]["none"] > noisy["llr"]["b4"] - noisy["llr"]["none"] + 1.0
    assert sharp["sensitivity"] > noisy["sensitivity"] and sharp["specificity"] > noisy["specificity"]
    # the weighting is what makes the sharp judge count: the fixed weights dilute it
    assert sharp_lift > sharp_fixed + 0.2
    assert noisy_lift >= noisy_fixed - 0.2  # and a noisy judge is no worse off for it


def _fixed(signals: list[dict]) -> float:
    fail = 1.0
    for s in signals:
        if s["weight"] >= 0:
            fail *= 1 - min(1.0, s["weight"] * s["value"])
    keep = np.prod([1 - min(1.0, -s["weight"] * s["value"]) for s in signals if s["weight"] < 0])
    return (1 - fail) * keep
