"""The LLM judge's verdict (`curate judge`) as one more failure signal of the prior.

The judge rates the reply HelpSteer2-style (0–4). Its verdict enters the noisy-OR like a user's 1–5 rating
(`low_rating`, weight 0.8): value = (4 − min(helpfulness, correctness)) / 4, so a judged 0 gives 1.0 and a judged 1
gives 0.75, which alone scores 0.6, over the 0.5 threshold: the prior then fails a reply exactly when the judge's
reading meets the default failure rule (helpfulness ≤ 1 or correctness ≤ 1). Nothing here is fitted: with no human
ratings there is nothing to fit the judge's weight on. Once people rate, the learned failure model
(`loops.failures`) takes the judge's attributes as features and learns how far to trust them.
"""
from __future__ import annotations

import sqlalchemy as sa

from curation.signals.base import ConversationView, Signal
from curation.store import Store
from curation.store.judge_tables import ATTRIBUTES, judgements


def judge_verdicts(store: Store, ids: list[str] | None = None) -> dict[str, dict]:
    """{conversation_id: {attribute: 0–4, "model", "rubric_version"}} from each conversation's newest parseable
    judgement (a conversation the judge never read, or read without an answer, is absent)."""
    j = judgements.c
    query = (sa.select(j.conversation_id, j.model, j.rubric_version, *(j[a] for a in ATTRIBUTES))
             .where(j.status == "ok").order_by(j.conversation_id, j.judged_at))
    out: dict[str, dict] = {}
    with store.connect() as conn:
        chunks = [None] if ids is None else [ids[i : i + 5000] for i in range(0, len(ids), 5000)]
        for chunk in chunks:
            for row in conn.execute(query if chunk is None else query.where(j.conversation_id.in_(chunk))):
                out[row.conversation_id] = {"model": row.model, "rubric_version": row.rubric_version,
                                            **{a: row._mapping[a] for a in ATTRIBUTES}}  # the newest last wins
    return out


class JudgeVerdict:
    """The judge's lower of helpfulness and correctness: 4 → nothing, 3 → 0.25 … 0 → 1.0."""

    name, weight = "judge", 0.8

    def __call__(self, conv: ConversationView) -> Signal | None:
        verdict = conv.judge
        if not verdict:
            return None
        read = [verdict[a] for a in ("helpfulness", "correctness") if verdict.get(a) is not None]
        if not read or min(read) >= 4:
            return None
        low = min(read)
        return Signal(self.name, (4 - low) / 4, f"the judge ({verdict.get('model')}) rates it {low}/4 "
                      f"(helpfulness {verdict.get('helpfulness')}, correctness {verdict.get('correctness')})")
