"""The loop's push step counts its own pushes against its budget, not a push someone ran beside it (issue 22)."""
from __future__ import annotations

import secrets

from annotations.push import push as manual_push
from curation.ingest import ingest
from curation.synthetic import write_jsonl
from curation.store import utcnow
from loops.loop import steps
from loops.loop.config import LoopConfig
from loops.loop.context import RunContext


def test_a_push_beside_the_loop_does_not_take_its_budget(store, argilla_env, tmp_path):
    ingest(store, [write_jsonl(tmp_path / "traffic.jsonl", 80, seed=3)], progress=False)
    config = LoopConfig()
    dataset = f"beside-{secrets.token_hex(4)}"
    config.annotate.dataset, config.annotate.budget, config.annotate.strategy = dataset, 10, "random"
    config.annotate.pairs = False
    ctx = RunContext(store, config, run_id="loop-run-" + secrets.token_hex(4), started_at=utcnow(), progress=False)

    beside = manual_push(store, dataset, budget=15, strategy="random", progress=False)  # after the loop started
    assert beside["pushed"] == 15
    first = steps.push(ctx)
    assert first["pushed"] == 10  # the loop's own budget, whatever else was pushed since it started
    again = steps.push(ctx)  # a resumed run: its own 10 are counted, nothing more goes
    assert again["pushed"] == 0
