"""The promotion gate's rule on per-pair wins, as `loops.reward.gate.promote` applies it to the fixed gate pairs."""
from __future__ import annotations

import numpy as np

from loops.reward.gate import decide, explain, reason


def _figures(wins_ch, wins_cp, longer, clusters=None, tolerance=0.0) -> dict:
    wins_ch, longer = np.asarray(wins_ch, float), np.asarray(longer, float)
    wins_cp = None if wins_cp is None else np.asarray(wins_cp, float)
    figures = {"n": len(wins_ch), "tolerance": tolerance, "challenger_accuracy": round(float(wins_ch.mean()), 4)}
    figures.update(decide(wins_ch, wins_cp, longer, clusters or [None] * len(wins_ch), tolerance))
    figures["reason"] = reason("rejected" if figures["failed"] else "promoted", figures)
    return figures


def test_a_lower_score_than_the_champion_is_rejected_even_on_six_pairs():
    """The case that used to pass: 0.667 against a champion at 0.833 on 6 pairs (the noise allowance was 0.33)."""
    f = _figures([1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 1, 0, 1, 0])
    assert f["failed"] == ["overall"]
    overall = f["checks"][0]
    assert (overall["challenger"], overall["other"], overall["difference"]) == (0.6667, 0.8333, -0.1667)
    assert overall["allowed_drop"] == 0.0 and overall["allowance"] == "tolerance"
    assert overall["ci_low"] < -0.4 and overall["ci_high"] > 0.1  # the interval is printed, and it is wide
    assert f["reason"] == ("rejected: 0.667 is below the champion's 0.833 on the same 6 gate pairs by more than the "
                           "allowed 0.000 (tolerance)")
    assert explain(f)[0].startswith("overall: 0.667 vs champion 0.833 on 6 pairs: -0.167 (95% CI -0.")
    assert _figures([1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0] * 6, tolerance=0.2)["failed"] == []


def test_a_model_that_does_not_beat_longer_answer_wins_is_rejected():
    """The first model of the tour: 0.61 on 23 pairs where the longer answer wins 0.72 of the time."""
    longer = np.array([1.0] * 16 + [0.5] + [0.0] * 6)
    f = _figures([1] * 14 + [0] * 9, None, longer)
    assert f["length_baseline"] == 0.7174 and f["failed"] == ["length baseline"] and "champion_accuracy" not in f
    assert f["reason"].startswith("rejected: 0.609 is below the longer-answer baseline's 0.717 on the same 23 gate pairs")
    better = _figures([1] * 20 + [0] * 3, None, longer)
    assert better["failed"] == []
    assert better["reason"].startswith("promoted: 0.870 vs longer-answer baseline 0.717 on 23 gate pairs (tolerance 0)")
    assert "only 23 gate pairs" in better["reason"]  # a small gate set says how little it can tell


def test_clusters_allow_for_noise_but_not_a_clear_drop():
    n = 40
    clusters = [1] * n + [2] * n
    champion = np.ones(2 * n)
    slightly = champion.copy()
    slightly[:2] = 0  # two pairs worse in cluster 1: within 1.96 standard errors there
    slightly[n:n + 2] = 0
    f = _figures(slightly, champion, np.zeros(2 * n), clusters, tolerance=0.06)
    assert f["failed"] == []
    by_scope = {c["scope"]: c for c in f["checks"]}
    assert set(by_scope) == {"overall", "length baseline", "cluster 1", "cluster 2"}
    assert by_scope["cluster 1"]["allowance"] == "1.96 × standard error" and by_scope["cluster 1"]["allowed_drop"] > 0.05
    clearly = champion.copy()
    clearly[:12] = 0  # 12 of 40 worse in cluster 1: overall −0.15 and a clear drop in the cluster
    f = _figures(clearly, champion, np.zeros(2 * n), clusters, tolerance=0.2)
    assert f["failed"] == ["cluster 1"]


def test_ties_count_half():
    f = _figures([0.5, 0.5], [1, 0], [0.5, 0.5])
    assert f["failed"] == [] and f["checks"][0]["difference"] == 0.0
