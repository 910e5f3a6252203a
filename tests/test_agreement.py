"""Consensus, quadratic κ, Krippendorff's ordinal α and per-annotator offsets, checked against published values."""
from __future__ import annotations

import random

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
