"""Consensus, quadratic κ, Krippendorff's ordinal α and per-annotator offsets, checked against published values."""
from __future__ import annotations

import itertools
import random
import time

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from annotations.agreement import agreement, consensus, krippendorff_alpha_ordinal, quadratic_kappa
from annotations.template import ATTRIBUTES


def test_kappa_matches_scikit_learn():
    rng = random.Random(0)
    a = [rng.randint(0, 4) for _ in range(200)]
    b = [min(4, max(0, x + rng.choice([-1, 0, 0, 1]))) for x in a]
    expected = cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5)))
    assert quadratic_kappa(a, b) == pytest.approx(expected)
    assert quadratic_kappa([2, 2, 2], [2, 2, 2]) is None  # no variance: undefined, not 1 or 0


def test_alpha_matches_krippendorffs_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4 observers × 12 units example,
    # values 1..5 with gaps: ordinal α = 0.815.
    nan = None
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    units = [[row[i] - 1 for row in data if row[i] is not None] for i in range(12)]
    assert krippendorff_alpha_ordinal(units) == pytest.approx(0.815, abs=0.001)
    assert krippendorff_alpha_ordinal([[1, 1], [3, 3], [0, 0]]) == pytest.approx(1.0)


def test_consensus_means_and_the_spread_rule():
    rows = [dict(zip(ATTRIBUTES, v), preference=None) for v in ([4, 4, 3, 2, 2], [3, 4, 3, 2, 1], [4, 3, 3, 2, 2])]
    c = consensus(rows)
    assert c["helpfulness"] == pytest.approx(11 / 3) and c["verbosity"] == pytest.approx(5 / 3)
    assert c["disagreement"] == 0 and c["n_annotators"] == 3
    rows[2]["helpfulness"] = 1  # spread 3 > 2 with three annotators
    assert consensus(rows)["disagreement"] == 1
    assert consensus(rows[::2])["disagreement"] == 0  # two annotators: the rule needs three


def _simulated(n_records=300, noise=0.9, outlier_share=0.1, seed=0):
    """Three annotators with a shared truth, Gaussian noise, one biased (+0.5), and some careless records."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_records):
        truth = rng.integers(0, 5, size=5)
        careless = rng.random() < outlier_share
        for annotator, bias in (("ann", 0.0), ("bob", 0.5), ("cy", 0.0)):
            scale = 3.0 if careless and annotator == "cy" else noise
            values = np.clip(np.rint(truth + bias + rng.normal(0, scale, 5)), 0, 4)
            rows.append({"record_id": f"r{i}", "annotator": annotator, **dict(zip(ATTRIBUTES, values.tolist()))})
    return rows


def test_agreement_report_before_and_after_the_filter():
    report = agreement(_simulated())
    assert report["records"] == 300 and report["responses"] == 900 and report["multi_annotated"] == 300
    assert 0 < report["disagreement"] < 300
    before, after = report["before_filter"], report["after_filter"]
    for name in ATTRIBUTES:
        assert 0.3 < before["attributes"][name]["kappa"] < after["attributes"][name]["kappa"] <= 1
        assert before["attributes"][name]["alpha"] < after["attributes"][name]["alpha"]
    assert before["overall"]["kappa"] < after["overall"]["kappa"]
    offsets = {name: a["mean_offset"] for name, a in report["annotators"].items()}
    assert offsets["bob"] > 0.25 > abs(offsets["ann"])  # the biased annotator is found
    assert {a["count"] for a in report["annotators"].values()} == {300}


def test_agreement_with_single_annotations_is_empty_not_an_error():
    report = agreement([{"record_id": "r1", "annotator": "ann", **{n: 2 for n in ATTRIBUTES}}])
    assert report["before_filter"]["overall"] == {"kappa": None, "alpha": None}
    assert report["annotators"] == {"ann": {"count": 1, "mean_offset": None}}


def _crowd(annotators: int, records: int, per_record: tuple[int, int], seed: int = 1) -> list[dict]:
    """Records rated by a few annotators each, drawn at random, near a hidden quality."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(records):
        who = rng.choice(annotators, size=int(rng.integers(*per_record)), replace=False)
        truth = rng.integers(0, 5, size=5)
        for annotator in who:
            values = np.clip(truth + rng.integers(-1, 2, size=5), 0, 4)
            rows.append({"record_id": f"r{i}", "annotator": f"a{annotator}", **dict(zip(ATTRIBUTES, values.tolist()))})
    return rows


def _kappa_pair_by_pair(rows: list[dict], name: str) -> float:
    """The definition, one scikit-learn call per annotator pair: κ averaged over pairs, weighted by shared records."""
    by_record: dict = {}
    for r in rows:
        by_record.setdefault(r["record_id"], []).append((r["annotator"], r[name]))
    pairs: dict = {}
    for rated in by_record.values():
        for (x, a), (y, b) in itertools.combinations(sorted(rated), 2):
            pairs.setdefault((x, y), ([], []))
            pairs[(x, y)][0].append(a)
            pairs[(x, y)][1].append(b)
    total = weight = 0.0
    for a, b in pairs.values():
        if len(a) >= 2:
            kappa = cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5)))
            if not np.isnan(kappa):
                total, weight = total + kappa * len(a), weight + len(a)
    return total / weight


def test_pairwise_kappa_equals_scikit_learn_pair_by_pair():
    rows = _crowd(annotators=12, records=400, per_record=(2, 5))
    report = agreement(rows)
    assert report["before_filter"]["kappa_sample"] == 1.0
    for name in ATTRIBUTES:
        assert report["before_filter"]["attributes"][name]["kappa"] == pytest.approx(_kappa_pair_by_pair(rows, name), abs=1e-9)


def test_520_annotators_take_seconds_and_a_bound_samples(monkeypatch):
    import annotations.agreement as module

    rows = [{"record_id": f"r{i}", "annotator": f"a{a}", **{n: (i + a % 3) % 5 for n in ATTRIBUTES}}
            for i in range(12) for a in range(520)]  # everyone rates the same 12 records: 1.6 million pairs
    started = time.perf_counter()
    exact = agreement(rows)
    assert time.perf_counter() - started < 120  # scikit-learn pair by pair: 134,940 pairs × 10, many minutes
    assert exact["before_filter"]["kappa_sample"] == 1.0 and exact["annotators"]["a7"]["count"] == 12
    monkeypatch.setattr(module, "MAX_PAIR_RATINGS", 100_000)
    sampled = agreement(rows)
    share = sampled["before_filter"]["kappa_sample"]
    assert 0.03 < share < 0.07  # 12 records × at most 129 of their 520 annotators
    assert sampled["before_filter"]["overall"]["kappa"] == pytest.approx(exact["before_filter"]["overall"]["kappa"], abs=0.03)
    assert sampled["before_filter"]["overall"]["alpha"] == exact["before_filter"]["overall"]["alpha"]  # α is exact
