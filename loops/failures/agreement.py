"""How far the LLM judge agrees with people: what `curate report` and the loop report show beside the scorer.

    judge_agreement(store) -> {"judge", "rule", "n", "kappa": {attribute: {"kappa", "n"}}, "confusion": {…}} | None

Over the conversations that both the judge and people rated (single-response ratings; several annotators' values of
an attribute are averaged, then rounded half up): the quadratic κ of the judge with people per attribute, and the
confusion of failure/not-failure by the configured failure rule (people's verdict as `load_labels` gives it, the
judge's by the same rule over its answer). Judge ratings are compared with people's here and nowhere counted as them.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import sqlalchemy as sa

from annotations.agreement import quadratic_kappa
from annotations.tables import ratings
from annotations.template import ATTRIBUTES
from curation.signals.judge import judge_verdicts
from curation.store import Store
from loops.failures.fit import load_labels, parse_rule, resolve_rule


def people_means(store: Store) -> dict[str, dict[str, int]]:
    """{conversation_id: {attribute: people's mean, rounded half up}} over single-response ratings."""
    values: dict[str, dict[str, list]] = {}
    with store.connect() as conn:
        for row in conn.execute(sa.select(ratings.c.conversation_id, *(ratings.c[a] for a in ATTRIBUTES))
                                .where(ratings.c.conversation_id_b.is_(None))):
            seen = values.setdefault(row[0], {})
            for a, v in zip(ATTRIBUTES, row[1:]):
                if v is not None:
                    seen.setdefault(a, []).append(v)
    return {c: {a: int(math.floor(np.mean(v) + 0.5)) for a, v in attrs.items()} for c, attrs in values.items()}


def judge_agreement(store: Store, rule: str | None = None) -> dict | None:
    """The judge's agreement with people, or None when no conversation has both a judgement and a rating."""
    rule = resolve_rule(store, rule)
    people = people_means(store)
    verdicts = judge_verdicts(store, sorted(people))
    both = sorted(set(people) & set(verdicts))
    if not both:
        return None
    kappa = {}
    for a in ATTRIBUTES:
        pairs = [(people[c][a], verdicts[c][a]) for c in both if a in people[c] and verdicts[c][a] is not None]
        k = quadratic_kappa([p for p, _ in pairs], [j for _, j in pairs]) if pairs else None
        kappa[a] = {"kappa": None if k is None else round(k, 3), "n": len(pairs)}
    labels, _ = load_labels(store, rule)
    is_failure = parse_rule(rule)
    cells = Counter()
    for c in both:
        judged = is_failure(verdicts[c])
        if c in labels and judged is not None:
            cells[("judge fails" if judged else "judge passes", "people fail" if labels[c] else "people pass")] += 1
    confusion = {"both fail": cells[("judge fails", "people fail")], "judge only": cells[("judge fails", "people pass")],
                 "people only": cells[("judge passes", "people fail")], "neither": cells[("judge passes", "people pass")]}
    judges = Counter(f"{verdicts[c]['model']}@{str(verdicts[c]['rubric_version'])[:12]}" for c in both)
    return {"judge": judges.most_common(1)[0][0], "rule": rule, "n": len(both), "kappa": kappa, "confusion": confusion}
