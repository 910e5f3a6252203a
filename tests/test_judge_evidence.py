"""The LLM judge as evidence: the simulated judge, the judge's verdict in the prior, its attributes as features of the
learned failure model (never as labels), judge–human agreement in the reports, and the `disagree` routing share."""
from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from sklearn.metrics import cohen_kappa_score

from annotations.routing import Candidates, FailureFirst, get_strategy, load_candidates
from annotations.tables import ratings
from benchmarks.simulated_judge import SimulatedJudge, helpfulness_kappa, serve, write_judgements
from curation.errors import ConfigError
from curation.ingest import ingest
from curation.report.html import judge_section
from curation.synthetic import write_jsonl
from curation.signals import ConversationView, load_scores, score_failures
from curation.signals.judge import JudgeVerdict, judge_verdicts
from curation.store import utcnow
from loops.failures import fit_failure_model
from loops.failures.agreement import judge_agreement
from loops.failures.fit import build_features


@pytest.fixture
def sample_store(store, tmp_path):
    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 400, seed=3)], progress=False)
    return store


def rate_from_truth(store, judge: SimulatedJudge, ids: list[str]) -> None:
    """People's ratings as `annotate pull` stores them: the truth the simulated judge reads, without its noise."""
    rows = [{"record_id": f"r-{c}", "dataset": "failures", "conversation_id": c, "conversation_id_b": None,
             "n_annotators": 1, "helpfulness": judge.truth[c]["helpfulness"], "correctness": judge.truth[c]["correctness"],
             "coherence": None, "complexity": None, "verbosity": None, "preference": None, "disagreement": 0,
             "annotators": '["sim"]', "run_id": None, "updated_at": utcnow()} for c in ids]
    with store.begin() as conn:
        conn.execute(ratings.insert(), rows)


def test_simulated_judge_is_seeded_and_its_kappa_falls_with_noise(sample_store):
    sharp, noisy = (SimulatedJudge.for_store(sample_store, noise, seed=1) for noise in (0.3, 3.0))
    cid = sorted(sharp.truth)[0]
    assert sharp.rate(cid) == sharp.rate(cid) and set(sharp.rate(cid)) >= {"helpfulness", "verbosity", "rationale"}
    assert all(0 <= v <= 4 for k, v in noisy.rate(cid).items() if k != "rationale")
    assert helpfulness_kappa(sharp) > 0.8 > helpfulness_kappa(noisy) + 0.4
    assert SimulatedJudge.for_store(sample_store, 3.0, seed=2).rate(cid) != noisy.rate(cid) or \
        SimulatedJudge.for_store(sample_store, 3.0, seed=3).rate(cid) != noisy.rate(cid)


def test_simulated_judge_answers_the_chat_completion_of_the_conversation_it_was_sent(sample_store):
    judge = SimulatedJudge.for_store(sample_store, 0.5, seed=0)
    cid = sorted(judge.truth)[5]
    conversation = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in judge.messages[cid])
    with serve(judge) as url:
        answer = httpx.post(f"{url}/chat/completions", json={"model": "sim", "messages": [
            {"role": "system", "content": "Rate the reply."}, {"role": "user", "content": conversation}]}).json()
        prose = httpx.post(f"{url}/chat/completions", json={"model": "garbage", "messages": [
            {"role": "user", "content": "nothing we know"}]}).json()
    assert orjson.loads(answer["choices"][0]["message"]["content"]) == judge.rate(cid)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(prose["choices"][0]["message"]["content"])
    assert judge.unmatched == 1 and judge.requests == 2


def test_judge_verdict_enters_the_prior_and_fails_exactly_by_the_default_rule():
    detector = JudgeVerdict()
    view = lambda h, c: ConversationView("x", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                         judge={"model": "m", "helpfulness": h, "correctness": c})
    assert detector(view(4, 4)) is None and detector(ConversationView("y", [])) is None
    assert detector(view(3, 4)).value == pytest.approx(1 / 4.8) and detector(view(0, 0)).value == 1.0
    assert detector(view(1, 1)).value > detector(view(1, 4)).value > detector(view(2, 2)).value  # the higher breaks ties
    for low in range(5):  # alone, the judge's verdict fails a reply at ≥ 0.5 exactly when min(h, c) ≤ 1
        signal = detector(view(low, 4))
        assert (round(signal.value * detector.weight if signal else 0, 6) >= 0.5) == (low <= 1)


def test_scoring_reads_the_newest_judgement_and_rescoring_without_one_changes_nothing(sample_store):
    score_failures(sample_store, progress=False)
    before = load_scores(sample_store)
    assert not any(s["name"] == "judge" for _, sig in before.values() for s in sig)
    judge = SimulatedJudge.for_store(sample_store, 0.3, seed=0)
    write_judgements(sample_store, judge)
    score_failures(sample_store, progress=False)
    after = load_scores(sample_store)
    bad = [c for c, t in judge.truth.items() if min(judge.rate(c)["helpfulness"], judge.rate(c)["correctness"]) <= 1]
    assert bad and all(after[c][0] >= 0.5 for c in bad)
    assert judge_verdicts(sample_store, bad[:1])[bad[0]]["helpfulness"] == judge.rate(bad[0])["helpfulness"]


def test_failure_model_takes_judge_attributes_as_features_never_as_labels(sample_store):
    judge = SimulatedJudge.for_store(sample_store, 0.5, seed=0)
    write_judgements(sample_store, judge)
    score_failures(sample_store, progress=False)
    rated = sorted(judge.truth)[:200]
    rate_from_truth(sample_store, judge, rated)
    fit = fit_failure_model(sample_store)
    assert "judge helpfulness" in fit["features"] and "judged" in fit["features"]
    assert fit["n_ratings"] == 200  # the judge rated all 400; only people's ratings are labels
    feats = build_features(sample_store, rated[:3])
    col = feats.names.index("judge correctness")
    assert list(feats.X[:, col]) == [judge.rate(c)["correctness"] for c in rated[:3]]
    assert build_features(sample_store, rated[:3], judge=False).names[-1] == "reward percentile"


def test_judge_agreement_is_quadratic_kappa_and_the_rule_confusion(sample_store):
    judge = SimulatedJudge.for_store(sample_store, 1.0, seed=4)
    write_judgements(sample_store, judge)
    assert judge_agreement(sample_store) is None  # nobody rated yet
    rated = sorted(judge.truth)[:150]
    rate_from_truth(sample_store, judge, rated)
    found = judge_agreement(sample_store)
    expected = cohen_kappa_score([judge.truth[c]["helpfulness"] for c in rated],
                                 [judge.rate(c)["helpfulness"] for c in rated], weights="quadratic", labels=range(5))
    assert found["n"] == 150 and found["kappa"]["helpfulness"]["kappa"] == pytest.approx(expected, abs=1e-3)
    assert found["kappa"]["verbosity"] == {"kappa": None, "n": 0}  # people did not rate it
    both = sum(1 for c in rated if judge.truth[c]["helpfulness"] <= 1
               and min(judge.rate(c)["helpfulness"], judge.rate(c)["correctness"]) <= 1)
    assert found["confusion"]["both fail"] == both and sum(found["confusion"].values()) == 150
    from loops.loop.report import _judge

    for page in (judge_section(found), _judge(sample_store)):  # curate report's section, and the loop report's
        assert 'id="judge-kappa"' in page and f"{found['kappa']['helpfulness']['kappa']:.2f}" in page
        assert f'<td class="num">{both}</td>' in page
    assert judge_section(None) == ""


def candidates(disagreement):
    n = len(disagreement)
    return Candidates([f"c{i}" for i in range(n)], np.linspace(1, 0, n), np.array([i % 4 for i in range(n)]),
                      np.zeros(n, dtype=bool), np.full(n, 0.5), np.asarray(disagreement, dtype=float))


def test_disagree_share_takes_the_largest_disagreements_spread_over_clusters():
    disagreement = np.zeros(40)
    disagreement[[20, 24, 28, 32, 36, 21]] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]  # clusters 0, 0, 0, 0, 0, 1
    picks = FailureFirst(uncertain=0, explore=0, disagree=0.5, max_cluster_share=0.5).select(candidates(disagreement), 8)
    chosen = [p.conversation_id for p in picks if p.strategy == "disagree"]
    assert chosen[:2] == ["c20", "c24"] and "c21" in chosen and len(chosen) == 4  # cluster 0 capped at 2 on the first pass
    off = FailureFirst(uncertain=0, explore=0).select(candidates(disagreement), 8)
    assert not any(p.strategy == "disagree" for p in off)  # off by default
    with pytest.raises(ConfigError, match="disagree"):
        get_strategy(None, {"uncertain": 0.5, "explore": 0.3, "disagree": 0.3})


def test_candidates_carry_disagreement_once_a_fit_and_judgements_exist(sample_store):
    judge = SimulatedJudge.for_store(sample_store, 0.5, seed=0)
    score_failures(sample_store, progress=False)
    assert load_candidates(sample_store, "failures").disagreement is None
    write_judgements(sample_store, judge)
    score_failures(sample_store, progress=False)
    rate_from_truth(sample_store, judge, sorted(judge.truth)[:200])
    fit_failure_model(sample_store)
    found = load_candidates(sample_store, "failures")
    assert found.disagreement is not None and 0 <= found.disagreement.min() and found.disagreement.max() <= 1
    with sample_store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ratings)).scalar() == 200



def test_the_ratings_can_trust_a_sharp_judge_almost_fully(store, oasst_file):
    """oasst1 with a sharp judge (κ ≈ 0.9), people rate half: the learned model ranks the other half about as well
    as the judge alone. Its verdict's column gets the prior's weak penalty (loops.failures.fit.emphasised); under
    the full penalty, like the other features, the same ratings leave the model well below the judge."""
    from sklearn.metrics import average_precision_score

    from loops.failures.fit import emphasised
    from loops.failures.model import FailureModel

    ingest(store, [oasst_file], progress=False)
    judge = SimulatedJudge.for_store(store, 0.45, seed=0)
    write_judgements(store, judge)
    score_failures(store, progress=False)
    ids = sorted(judge.truth)
    rated, unrated = ids[::2], ids[1::2]
    rate_from_truth(store, judge, rated)
    names = build_features(store, rated).names
    assert emphasised(names) == (0, names.index("judge"))
    y = np.array([any(v is not None and v <= 1 for v in judge.truth[c].values()) for c in unrated])
    alone = average_precision_score(y, [8 - judge.rate(c)["helpfulness"] - judge.rate(c)["correctness"] for c in unrated])

    def learned(model=None) -> float:
        fit_failure_model(store, model=model)
        with store.connect() as conn:
            p = dict(conn.execute(sa.text("SELECT conversation_id, probability FROM failure_model_scores")).all())
        return average_precision_score(y, [p[c] for c in unrated])

    trusting = learned()
    penalised = learned(FailureModel(n_tabular=len(names), emphasised=(0,)))
    assert trusting >= 0.97 * alone
    assert trusting > penalised + 0.02
