"""The LLM judge's verdict (`curate judge`) as one more failure signal of the prior.

The judge rates the reply HelpSteer2-style (0–4). Its verdict enters the noisy-OR like a user's 1–5 rating
(`low_rating`, weight 0.8): value = ((4 − low) + (4 − high) / 5) / 4.8, where low and high are the lower and the
higher of helpfulness and correctness (0 and 0 give 1.0). A judged 1 gives at least 0.625, which alone scores 0.5, the
failure threshold, and a judged 2 at most 0.5, which scores 0.4: the prior fails a reply on the judge's word exactly
when its reading meets the default failure rule (helpfulness ≤ 1 or correctness ≤ 1); the higher attribute only
orders equal lows. Nothing here is fitted: with no human ratings there is nothing to fit the judge's weight on. Once
people rate, the learned failure model (`loops.failures`) takes the judge's attributes as features and learns how far
to trust them.
"""
from __future__ import annotations

from curation.judge import latest_judgements
from curation.signals.base import ConversationView, Signal
from curation.store import Store


def judge_verdicts(store: Store, ids: list[str] | None = None) -> dict[str, dict]:
    """{conversation_id: {attribute: 0–4, "model", "rubric_version", …}}: each conversation's newest parseable
    judgement (`curation.judge.latest_judgements`); one the judge never read, or read without an answer, is absent."""
    with store.connect() as conn:
        return latest_judgements(conn, ids)


class JudgeVerdict:
    """The judge's lower of helpfulness and correctness (4 → nothing … 0 → most), its higher breaking ties."""

    name, weight = "judge", 0.8

    def __call__(self, conv: ConversationView) -> Signal | None:
        verdict = conv.judge
        if not verdict:
            return None
        read = [verdict[a] for a in ("helpfulness", "correctness") if verdict.get(a) is not None]
        if not read or min(read) >= 4:
            return None
        low, high = min(read), max(read)
        # the lower attribute decides (the default rule fails on either); the higher only orders equal lows: a fifth
        # of a step at most
        why = (f"the judge ({verdict.get('model')}) rates it {low}/4 (helpfulness {verdict.get('helpfulness')}, "
               f"correctness {verdict.get('correctness')})")
        return Signal(self.name, ((4 - low) + (4 - high) / 5) / 4.8, why)
