"""Failure detectors, the combined failure score, and scoring the store (real SQLite/PostgreSQL, real oasst1 data)."""
from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

from curation.errors import ConfigError
from curation.ingest import ingest, ingest_records
from curation.signals import ConversationView, Signal, default_detectors, load_scores, score_conversation, score_failures
from curation.signals.response import guess_language
from curation.signals.score import combine
from curation.store import utcnow
from curation.store.failure_tables import failure_scores, rewards


def chat(user: str, reply: str, *later: str, feedback: list | None = None) -> ConversationView:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    for i, text in enumerate(later):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    events = [{"type": e[0], "value": e[1] if len(e) > 1 else None, "turn": None, "at": None} for e in feedback or []]
    return ConversationView("c", messages, events)


def fired(conv: ConversationView) -> dict[str, dict]:
    detectors = default_detectors()
    _, signals = score_conversation(conv, detectors, {d.name: d.weight for d in detectors})
    return {s["name"]: s for s in signals}


CLEAN = chat("How do I reverse a list in Python?", "Use `items[::-1]` for a reversed copy, or `items.reverse()` in place.")


def test_a_clean_conversation_fires_nothing():
    assert fired(CLEAN) == {}


@pytest.mark.parametrize(
    "conv, name",
    [
        (chat("Hi", "Hello!", feedback=[("thumbs_down",)]), "thumbs_down"),
        (chat("Hi", "Hello!", feedback=[("flag",)]), "thumbs_down"),  # a flag counts as a thumbs down
        (chat("Hi", "Hello!", feedback=[("rating", 1)]), "low_rating"),
        (chat("Hi", "Hello!", feedback=[("comment", "this is just wrong")]), "negative_comment"),
        (chat("Hi", "Hello!", feedback=[("regenerated",)]), "regenerated"),
        (chat("Hi", "Hello!", feedback=[("edited",)]), "edited"),
        (chat("Hi", "Hello!", feedback=[("abandoned",)]), "abandoned"),
        (chat("How do I sort a dict by value in python", "Use sorted().",
              "how do I sort a dict by value in python?", "Like this: sorted(d.items(), key=...)"), "repeated_question"),
        (chat("Fix my loop", "Here is the fix.", "That's wrong, it still doesn't work", "Sorry."), "correction"),
        (chat("Write a short poem about autumn leaves", "I'm sorry, but I can't help with that request."), "refusal"),
        (chat("Explain TCP", ""), "empty_or_truncated"),
        (chat("Show code", "Here it is:\n```python\nprint('hi')\n"), "empty_or_truncated"),
        (chat("Why?", "I apologize for the confusion in my previous answer."), "apology"),
        (chat("Run it", "Traceback (most recent call last):\n  File x\nValueError: boom"), "error_text"),
        (chat("Wie kann ich in Python eine Liste umdrehen? Ich verstehe die Dokumentation nicht und die Lösung ist mir "
              "nicht klar.", "You can reverse the list with the slice notation and it is the fastest way to do this."),
         "language_mismatch"),
        (chat(" ".join(["please explain in detail how the garbage collector works"] * 4), "No."), "extreme_length"),
    ],
)
def test_each_detector_fires_on_its_case_and_says_why(conv, name):
    signals = fired(conv)
    assert name in signals, signals
    assert signals[name]["why"] and 0 < signals[name]["value"] <= 1


def test_refusing_a_dangerous_request_is_not_a_failure():
    assert "refusal" not in fired(chat("How do I build a bomb at home?", "I'm sorry, but I can't help with that."))


def test_thumbs_use_counts_and_a_thumbs_up_lowers_the_score():
    # the value is the posterior mean share of users who disliked the reply, (downs + 1) / (downs + ups + 2)
    mostly_up = chat("Hi", "Hello!", feedback=[("thumbs_down", 1), ("thumbs_up", 9)])
    assert fired(mostly_up)["thumbs_down"]["value"] == pytest.approx(2 / 12, abs=1e-4)
    many_down = chat("Hi", "Hello!", feedback=[("thumbs_down", 2), ("flag", 1)])
    assert fired(many_down)["thumbs_down"]["value"] == pytest.approx(0.8)
    only_up = fired(chat("Hi", "Hello!", feedback=[("thumbs_up", 2)]))
    assert only_up["thumbs_up"]["weight"] < 0
    detectors = default_detectors()
    weights = {d.name: d.weight for d in detectors}
    down, _ = score_conversation(chat("Hi", "Hello!", feedback=[("thumbs_down",)]), detectors, weights)
    down_and_apology, _ = score_conversation(
        chat("Hi", "I apologize, hello!", feedback=[("thumbs_down",)]), detectors, weights)
    assert down == pytest.approx(0.6) and down_and_apology > down


def test_explicit_feedback_outranks_any_single_weak_signal():
    """One thumbs down alone is stronger evidence than any one implicit or reply signal, and no weak signal alone
    reaches the failure threshold (docs/concepts-failures.md, "Combination")."""
    explicit = {"thumbs_down", "flag", "low_rating", "negative_comment", "thumbs_up", "low_reward", "judge"}
    weak = [d for d in default_detectors() if d.name not in explicit]
    assert weak and all(0 < d.weight < 0.5 for d in weak)
    down, _ = score_conversation(chat("Hi", "Hello!", feedback=[("thumbs_down",)]), default_detectors(),
                                 {d.name: d.weight for d in default_detectors()})
    assert down > max(d.weight for d in weak)


def test_combine_is_noisy_or_scaled_by_success_evidence():
    weights = {"a": 0.5, "b": 0.5, "up": -0.5}
    assert combine([Signal("a", 1.0, "")], weights) == pytest.approx(0.5)
    assert combine([Signal("a", 1.0, ""), Signal("b", 1.0, "")], weights) == pytest.approx(0.75)
    assert combine([Signal("a", 1.0, ""), Signal("up", 1.0, "")], weights) == pytest.approx(0.25)
    assert combine([], weights) == 0


def test_guess_language_abstains_on_short_or_mixed_text():
    assert guess_language("ok") is None
    assert guess_language("Это очень длинное предложение на русском языке для проверки") == "cyrillic"
    assert guess_language("```python\nprint('the and is are you to of in that')\n```") is None


def _records():
    return [
        {"id": "good", "user_id": "u1", "messages": [{"role": "user", "content": "What is 2+2?"},
                                                     {"role": "assistant", "content": "4."}],
         "feedback": [{"type": "thumbs_up"}]},
        {"id": "bad", "user_id": "u2", "messages": [{"role": "user", "content": "Write a haiku about the sea"},
                                                    {"role": "assistant", "content": "I cannot help with that."}],
         "feedback": [{"type": "thumbs_down"}, {"type": "comment", "value": "useless"}]},
        {"id": "meh", "user_id": "u3", "messages": [{"role": "user", "content": "Summarise the plot of Hamlet"},
                                                    {"role": "assistant", "content": "A prince avenges his father."}]},
    ]


def test_score_failures_writes_one_explained_row_per_conversation(store):
    ingest_records(store, _records())
    summary = score_failures(store, progress=False)
    assert summary["scored"] == 3 and summary["failures"] == 1
    scores = load_scores(store)
    # bad: 1 − (1 − 0.6)(1 − 0.6)(1 − 0.3) from thumbs_down, negative_comment and refusal
    assert scores["bad"][0] > 0.85 and scores["good"][0] == 0 and scores["meh"][0] == 0
    names = {s["name"] for s in scores["bad"][1]}
    assert {"thumbs_down", "negative_comment", "refusal"} <= names
    assert all({"name", "value", "weight", "why"} <= set(s) for s in scores["bad"][1])
    # a rerun replaces the rows rather than adding to them
    score_failures(store, progress=False)
    assert store.count(failure_scores) == 3


def test_weights_are_configurable_and_unknown_names_are_refused(store):
    ingest_records(store, _records())
    score_failures(store, weights={"thumbs_down": 0, "negative_comment": 0, "refusal": 0.2}, progress=False)
    assert load_scores(store)["bad"][0] == pytest.approx(0.2)
    (store.home / "curate.toml").write_text("[signals.weights]\nrefusal = 0.4\n")
    score_failures(store, weights={"thumbs_down": 0, "negative_comment": 0}, progress=False)
    assert load_scores(store)["bad"][0] == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="no detector named 'nope'"):
        score_failures(store, weights={"nope": 1}, progress=False)


def test_a_user_detector_plugs_in(store):
    class MentionsHamlet:
        name, weight = "hamlet", 1.0

        def __call__(self, conv):
            return Signal(self.name, 1.0, "talks about Hamlet") if "Hamlet" in conv.prompt else None

    ingest_records(store, _records())
    score_failures(store, detectors=[*default_detectors(), MentionsHamlet()], progress=False)
    score, signals = load_scores(store)["meh"]
    assert score == 1.0 and signals[0]["why"] == "talks about Hamlet"


def test_low_reward_reads_the_newest_reward_model(store):
    ingest_records(store, _records())
    with store.begin() as conn:
        conn.execute(rewards.insert(), [
            {"conversation_id": cid, "model_version": version, "reward": reward, "scored_at": at}
            for version, at, values in (("rm-1", "2026-01-01T00:00:00.000000Z", {"good": -9, "bad": 1, "meh": 2}),
                                        ("rm-2", utcnow(), {"good": 3, "bad": 1, "meh": -5}))
            for cid, reward in values.items()])
    summary = score_failures(store, weights={"thumbs_up": 0}, progress=False)
    assert summary["reward_model"] == "rm-2"
    scores = load_scores(store)
    assert "low_reward" in {s["name"] for s in scores["meh"][1]}
    assert "low_reward" not in {s["name"] for s in scores["good"][1]}
    score_failures(store, reward_model="rm-1", weights={"thumbs_up": 0}, progress=False)
    assert "low_reward" in {s["name"] for s in load_scores(store)["good"][1]}


def test_failure_scores_find_low_quality_replies_in_oasst1(store, oasst_file):
    """The review labels stay hidden from the detectors; here they only judge the ranking (lift over the base rate)."""
    ingest(store, [oasst_file], progress=False)
    score_failures(store, progress=False)
    with store.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.metadata, c.messages, f.failure_score FROM conversations c JOIN failure_scores f "
            "ON f.conversation_id = c.id")).all()
    truth = []
    for metadata, messages, score in rows:
        last = len(orjson.loads(messages)) - 1
        review = next((r for r in orjson.loads(metadata)["oasst_review"].values() if r["turn"] == last), None)
        labels = (review or {}).get("labels") or {}
        if "quality" in labels:
            low = labels["quality"] <= 0.25 or labels.get("fails_task", 0) >= 0.5
            truth.append((score, low))
    truth.sort(key=lambda t: -t[0])
    base = sum(low for _, low in truth) / len(truth)
    top = truth[: len(truth) // 10]
    assert sum(low for _, low in top) / len(top) > 2 * base
