"""Run a per-conversation job over the store on a Ray cluster: one actor per CPU (or per GPU), each loading its model
once, opening its own connection to the PostgreSQL store, and doing whole chunks of conversation ids.

The driver holds only ids: it pages them in keyset order (id > last, a page at a time), keeps one chunk in flight per
actor, and adds up the counts the actors return, so its memory does not grow with the store. Each chunk is read,
computed and written by the job inside the actor, in the same per-chunk transaction as the local path, so a run that
stops (driver or worker killed) keeps every finished chunk and the next run does only what is missing. A chunk whose
actor dies is given to another actor; when none is left the run fails and a rerun resumes it.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
from collections import deque
from typing import Any, Callable, Iterator

import sqlalchemy as sa
from tqdm import tqdm

from curation.errors import CurateError
from curation.store import Store
from curation.store.tables import conversations

# What a worker process must see as the driver does: the model cache (exports are made once per machine there), and
# the offline switches, so a worker never downloads what the driver would not.
WORKER_ENV = ("CURATE_CACHE_DIR", "XDG_CACHE_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
              "TOKENIZERS_PARALLELISM")


class RayRunError(CurateError):
    """The Ray run stopped; what the workers finished is kept."""


class _Worker:
    """A Ray actor: its own store handle on the PostgreSQL URL and one job, whose model loads on the first chunk."""

    def __init__(self, url: str, job: Callable[[Store, list[str]], dict]):
        self.store = Store.open(tempfile.mkdtemp(prefix="curate-ray-"), url=url, migrate=False)
        self.job = job

    def run(self, ids: list[str]) -> dict:
        return self.job(self.store, ids)


def id_pages(store: Store, where: sa.ColumnElement[bool] | None, size: int) -> Iterator[list[str]]:
    """Conversation ids matching `where`, in id order, `size` at a time (keyset paging: only ids are read)."""
    after = None
    while True:
        query = sa.select(conversations.c.id).order_by(conversations.c.id).limit(size)
        if where is not None:
            query = query.where(where)
        if after is not None:
            query = query.where(conversations.c.id > after)
        with store.connect() as conn:
            ids = list(conn.execute(query).scalars())
        if not ids:
            return
        after = ids[-1]
        yield ids


def connect(address: str | None) -> bool:
    """Connect this process to Ray (unless it is already); True when this call connected it."""
    try:
        import ray
    except ImportError:
        raise CurateError("--engine ray needs Ray: pip install 'curate[ray]'") from None
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    check_reachable(target)
    try:
        ray.init(address=address or None, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise RayRunError(explain_connect_error(exc, target)) from None
    return True


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when HOST:PORT does not answer: Ray's own client retries for minutes."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address or "")
    if match is None:  # auto, or no address: Ray looks for a local cluster and says so when it finds none
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayRunError(f"cannot reach the Ray cluster at {address} ({reason}): start it there with "
                          f"`ray start --head --port={port}`, or fix --ray-address (RAY_ADDRESS, curate.toml "
                          "[engine] address)") from None


def explain_connect_error(exc: BaseException, address: str | None) -> str:
    """One line naming the cause and the fix of a failed `ray.init`: a refused token, another Ray or Python
    version, or a cluster that cannot be found. Ray keeps the cause in the exception's chain."""
    where = address or "$RAY_ADDRESS or a local one"
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(chain)
    if any(mark in text for mark in ("InvalidAuthToken", "Unauthenticated", "AuthenticationError")):
        mode = os.environ.get("RAY_AUTH_MODE") or "unset"
        return (f"the Ray cluster at {where} refused this process's token (RAY_AUTH_MODE is {mode}): set "
                "RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token) here, "
                "as on every node; docs/scale.md, 'Token authentication'")
    if "Version mismatch" in text:
        versions = re.findall(r"Ray: (\S+)\s+Python: (\S+)", text)
        if len(versions) >= 2:
            (ray_there, py_there), (ray_here, py_here) = versions[:2]
            return (f"the Ray cluster at {where} runs Ray {ray_there} on Python {py_there}, this process Ray "
                    f"{ray_here} on Python {py_here}: install the same Ray and Python versions here and on every node")
        return f"the Ray cluster at {where} runs another Ray or Python version: install the same ones everywhere"
    return (f"cannot connect to the Ray cluster at {where}: {str(exc).strip().splitlines()[0]}; start it with "
            "`ray start --head`, or fix --ray-address")


def run(store: Store, job: Callable[[Store, list[str]], dict], where: sa.ColumnElement[bool] | None, total: int,
        size: int, address: str | None = None, desc: str = "", progress: bool | None = None) -> dict:
    """Do `job(store, ids)` over every conversation matching `where` on the Ray cluster, `size` ids at a time;
    returns the jobs' counts added up (numbers summed, dicts of numbers summed per key), with "workers".

    Callers pass the local path's chunk size: the chunks are then the local path's, and so are the batches a model
    sees (int8 vectors depend slightly on which texts share a padded batch), so the results are the same."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    started = connect(address)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    workers = gpus or cpus
    if workers == 0:
        raise RayRunError("the Ray cluster has no CPU for a worker; start a worker node with `ray start --address=…`")
    env = {name: os.environ[name] for name in WORKER_ENV if os.environ.get(name)}
    options = {"num_cpus": 1, "num_gpus": 1 if gpus else 0, "max_restarts": 0, "runtime_env": {"env_vars": env}}
    url = store.engine.url.render_as_string(hide_password=False)
    actors = [ray.remote(_Worker).options(**options).remote(url, job) for _ in range(workers)]
    totals: dict[str, Any] = {}
    pages, retry, idle, running = id_pages(store, where, size), deque(), list(actors), {}
    try:
        with tqdm(total=total, desc=desc, unit="conv", disable=None if progress is None else not progress) as bar:
            while True:
                while idle and (ids := retry.popleft() if retry else next(pages, None)) is not None:
                    actor = idle.pop()
                    running[actor.run.remote(ids)] = (actor, ids)
                if not running:
                    break
                (ref,), _ = ray.wait(list(running), num_returns=1)
                actor, ids = running.pop(ref)
                try:
                    counts = ray.get(ref)
                except RayTaskError as exc:
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    raise RayRunError(f"a Ray worker failed: {str(cause).strip().splitlines()[0]}; finished chunks "
                                      "are kept, run the same command again to resume") from None
                except RayActorError:  # its node went away: another worker does the chunk
                    retry.append(ids)
                    if not idle and not running:
                        raise RayRunError("every Ray worker died; finished chunks are kept, run the same command "
                                          "again to resume") from None
                    continue
                add_counts(totals, counts)
                bar.update(len(ids))
                idle.append(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    return {**totals, "workers": workers}


def add_counts(totals: dict, counts: dict) -> None:
    """Add a job's counts into `totals`: numbers summed, dicts of numbers summed per key (both engines use it)."""
    for key, value in counts.items():
        if isinstance(value, dict):
            add_counts(totals.setdefault(key, {}), value)
        else:
            totals[key] = totals.get(key, 0) + value
