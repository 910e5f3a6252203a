"""Routing strategies on the real store: failure-first with a per-cluster cap and exploration, random, seeds."""
from __future__ import annotations

import numpy as np
import pytest

from annotations.routing import Candidates, FailureFirst, RandomSample, get_strategy, load_candidates


def _candidates(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 10, n)
    cluster[:50] = -1  # unclustered
    score = rng.random(n) * 0.5
    score[cluster == 3] += 0.5  # one cluster fails a lot: it must not take the whole budget
    novel = rng.random(n) < 0.05
    return Candidates([f"c{i}" for i in range(n)], score, cluster, novel)


def test_failure_first_spreads_and_explores():
    cands = _candidates()
    picks = FailureFirst().select(cands, 200)
    assert len(picks) == len({p.conversation_id for p in picks}) == 200
    shares = {s: sum(p.strategy == s for p in picks) for s in ("failure", "novel", "random")}
    assert shares == {"failure": 160, "novel": 20, "random": 20}
    index = {cid: i for i, cid in enumerate(cands.ids)}
    failure = [index[p.conversation_id] for p in picks if p.strategy == "failure"]
    per_cluster = np.bincount(cands.cluster[failure][cands.cluster[failure] >= 0], minlength=10)
    assert per_cluster.max() <= 40  # the 25% cap of the failure share
    assert per_cluster[3] == 40  # … which the worst cluster fills
    # within the cap, the highest scores win: every failure pick outranks the best unpicked conversation outside cluster 3
    unpicked = np.setdiff1d(np.arange(len(cands)), [index[p.conversation_id] for p in picks])
    outside = unpicked[cands.cluster[unpicked] != 3]
    assert min(cands.score[i] for i in failure if cands.cluster[i] != 3) >= cands.score[outside].max()
    assert all(cands.novel[index[p.conversation_id]] for p in picks if p.strategy == "novel")


def test_cap_relaxes_when_clusters_are_few():
    n = 100
    cands = Candidates([f"c{i}" for i in range(n)], np.linspace(0, 1, n), np.zeros(n, dtype=int), np.zeros(n, dtype=bool))
    assert len(FailureFirst(explore=0).select(cands, 50)) == 50


def test_seeded_and_deterministic():
    cands = _candidates()
    assert FailureFirst(random_state=1).select(cands, 100) == FailureFirst(random_state=1).select(cands, 100)
    assert RandomSample(random_state=1).select(cands, 100) == RandomSample(random_state=1).select(cands, 100)
    assert RandomSample(random_state=1).select(cands, 100) != RandomSample(random_state=2).select(cands, 100)
    assert len(RandomSample().select(cands, 5000)) == len(cands)
    assert isinstance(get_strategy("random"), RandomSample) and isinstance(get_strategy(None), FailureFirst)


def test_load_candidates_reads_scores_and_skips_unrateable(store, oasst_file):
    from curation.ingest import ingest, ingest_records
    from curation.signals import score_failures

    ingest(store, [oasst_file], progress=False)
    ingest_records(store, [{"id": "no-reply", "messages": [{"role": "user", "content": "hello?"}]}])
    score_failures(store, progress=False)
    cands = load_candidates(store, "ds")
    assert "no-reply" not in cands.ids and len(cands) > 500
    assert (cands.score > 0).any() and (cands.cluster == -1).all()


def test_uncertain_share_takes_the_least_sure_spread_over_clusters():
    cands = _candidates()
    # no learned model: the uncertain share joins the failure share (the mix above)
    assert {p.strategy for p in FailureFirst().select(cands, 200)} == {"failure", "novel", "random"}
    rng = np.random.default_rng(1)
    p = rng.random(len(cands))
    p[cands.cluster == 5] = 0.5  # one cluster the model is least sure about: it must not take the whole share
    cands.uncertainty = 4 * p * (1 - p)
    picks = FailureFirst().select(cands, 200)
    shares = {s: sum(p.strategy == s for p in picks) for s in ("failure", "uncertain", "novel", "random")}
    assert shares == {"failure": 100, "uncertain": 60, "novel": 20, "random": 20}
    index = {cid: i for i, cid in enumerate(cands.ids)}
    unsure = [index[p.conversation_id] for p in picks if p.strategy == "uncertain"]
    assert np.bincount(cands.cluster[unsure][cands.cluster[unsure] >= 0]).max() <= 15  # 25% of 60
    assert np.mean(cands.uncertainty[unsure]) > 0.9 > np.mean(cands.uncertainty)
    assert len({p.conversation_id for p in picks}) == 200
    assert len(FailureFirst().select(cands.without({cands.ids[i] for i in unsure}), 10)) == 10


def test_the_mix_comes_from_curate_toml(store):
    from annotations.push import push
    from curation.errors import ConfigError
    from curation.ingest import ingest_records

    strategy = get_strategy(None, {"uncertain": 0.0, "explore": 0.5})
    assert (strategy.uncertain, strategy.explore) == (0.0, 0.5)
    for bad in ({"uncertain": 2}, {"uncertian": 0.1}, {"uncertain": 0.6, "explore": 0.5}):
        with pytest.raises(ConfigError, match=r"\[routing\]"):
            get_strategy("failure", bad)
    (store.home / "curate.toml").write_text("[routing]\nexplore = 7\n")
    ingest_records(store, [{"id": "a", "messages": [{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]}])
    with pytest.raises(ConfigError, match="explore"):
        push(store, "d", budget=1)
