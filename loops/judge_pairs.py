"""Judge-derived preference pairs (RLAIF), for `curate export preferences --include-judge`.

Two replies to the same context that the LLM judge rated apart by at least the tie threshold make a pair: the
higher-rated is chosen, margin = the difference of their scores (helpfulness, or the rules' weighted sum). Every such
row has `source = "judge"` and `rule = "judge"`, names the judge (model and rubric version) in `annotators`, and the
card says how many there are: they are never presented as human preferences.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any, Callable

SOURCE = "judge"


def judge_score(judged: dict, weights: dict[str, float] | None) -> float | None:
    if not weights:
        return judged.get("helpfulness")
    values = [(judged.get(a), w) for a, w in weights.items()]
    return None if any(v is None for v, _ in values) else sum(v * w for v, w in values)


def judge_pairs(judged: dict[str, dict], units: dict[str, Any], context_id: Callable,
                make_pair: Callable, tie_threshold: float, weights: dict[str, float] | None = None) -> tuple[list[dict], int]:
    """(pairs, ties dropped) from `judged` ({conversation id: judgement}, as `latest_judgements` gives) and `units`
    ({conversation id: `loops.pairs.Unit`}); `make_pair(prompt, chosen, rejected, margin, rule, **provenance)` builds
    a row as the export's other rules do."""
    by_context: dict[str, list] = defaultdict(list)
    for cid in sorted(judged):
        score = judge_score(judged[cid], weights)
        if cid in units and score is not None:
            by_context[context_id(units[cid].context)].append((score, cid))
    pairs, ties = [], 0
    for group in by_context.values():
        for (s1, c1), (s2, c2) in combinations(sorted(group, key=lambda g: (-g[0], g[1])), 2):
            if units[c1].reply["content"] == units[c2].reply["content"]:
                continue
            if s1 - s2 < max(tie_threshold, 1e-9):
                ties += 1
                continue
            judges = sorted({f"{judged[c]['model']}@{judged[c]['rubric_version']}" for c in (c1, c2)})
            pairs.append(make_pair(units[c1].context, units[c1].reply, units[c2].reply, s1 - s2, "judge",
                                   cluster_id=units[c1].cluster_id,
                                   conversation_id_chosen=c1, conversation_id_rejected=c2, annotators=judges,
                                   source=SOURCE, simulated=False))
    return pairs, ties
