"""Finding failures: score the failure signals, cluster, then refresh the learned failure model.

`curate cluster` and the loop's cluster step both run this one function. It lives in `loops/` because the last part
(`loops.failures.refresh`) learns from ratings, and `curation` never imports `loops`.
"""
from __future__ import annotations

from typing import Any

from curation.store import Store


def find_failures(store: Store, *, k: int | str = "auto", algorithm: str = "kmeans", seed: int = 0,
                  refit: bool | str = "auto", space: str | None = None, labeller: Any = None,
                  sample: int | None = None, engine: str | None = None, address: str | None = None,
                  failure_rule: str | None = None, refresh_model: bool = True, progress: bool | None = None) -> dict:
    """Score every conversation's failure signals, then cluster (`curation.cluster.cluster`), both on `engine`; with
    `refresh_model`, refresh the learned failure model afterwards (`loops.failures.refresh`, as "failure_model").

    `k` and the failure rule are checked before any work starts. Returns the clustering's summary; on Ray it also
    holds "engine": {"kind", "workers", "assignment_tasks"}.
    """
    from curation.cluster import cluster as run_cluster
    from curation.cluster.run import checked_k
    from curation.engine import assignment_executor
    from curation.signals import score_failures
    from loops.failures.fit import refresh, resolve_rule

    k = checked_k(k)
    rule = resolve_rule(store, failure_rule) if refresh_model else None
    scoring = score_failures(store, engine=engine, address=address, progress=progress)
    with assignment_executor(store, engine, address) as executor:
        result = run_cluster(store, k=k, algorithm=algorithm, seed=seed, space=space, refit=refit, labeller=labeller,
                             score=False, sample=sample, executor=executor, progress=progress)
    if "workers" in scoring:  # Ray: the actors that scored, and the tasks of the streamed assignment (0 unstreamed)
        result["engine"] = {"kind": "ray", "workers": scoring["workers"], "assignment_tasks": executor.submitted}
    if refresh_model:
        result["failure_model"] = refresh(store, rule=rule)
    return result
