"""The LLM judge's attributes as columns of the failure model: evidence whose weight the ratings decide.

Each conversation gets the newest parseable judgement's five attributes (0–4) and a `judged` flag (1 = the judge
read it); a conversation without one gets zeros and `judged` 0, so the model learns that missing is not "rated 0".
The columns join the features only when the store holds judgements (a fit without them keeps its columns when it
scores later): a store that never ran `curate judge` fits exactly the model it fitted before.
"""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from curation.signals.judge import judge_verdicts
from curation.store import Store
from curation.store.judge_tables import ATTRIBUTES, judgements

COLUMNS = [*(f"judge {a}" for a in ATTRIBUTES), "judged"]


def has_judgements(store: Store) -> bool:
    with store.connect() as conn:
        return conn.execute(sa.select(judgements.c.conversation_id).where(judgements.c.status == "ok").limit(1)).first() is not None


def uses_judge(names: list[str]) -> bool:
    """Whether a fit's tabular columns include the judge's."""
    return COLUMNS[0] in names


def judge_columns(store: Store, ids: list[str]) -> np.ndarray:
    """(len(ids), 6): the five attributes and the `judged` flag, in COLUMNS order."""
    verdicts = judge_verdicts(store, ids)
    out = np.zeros((len(ids), len(COLUMNS)), dtype=np.float32)
    for i, cid in enumerate(ids):
        verdict = verdicts.get(cid)
        if verdict is not None:
            out[i, :-1] = [verdict[a] if verdict[a] is not None else 2 for a in ATTRIBUTES]
            out[i, -1] = 1.0
    return out
