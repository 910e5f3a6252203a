"""`curate demo`: the whole loop on generated traffic, offline, with simulated annotators between two runs.

Day 1's traffic is ingested, embedded, clustered, scored and its failures pushed to the embedded Argilla server.
Simulated annotators (seeded and noisy; see loops/simulate.py) rate them through the real API. Day 2's traffic
arrives, and the second run pulls the ratings, exports preference pairs, trains a reward model, gates it and writes
the report. The server stays up afterwards so you can look around in the web UI.
"""
from __future__ import annotations

import datetime as dt
import os
from typing import Callable

from curation.config import resolve_home
from curation.synthetic import write_jsonl
from curation.store import Store
from loops.loop.config import Annotate, Export, LoopConfig, Sources, Train
from loops.loop.runner import run_loop

DATASET, WORKSPACE = "demo-failures", "demo"


def demo_config() -> LoopConfig:
    """The loop the demo runs: small enough for a laptop CPU, large enough to show every step working."""
    return LoopConfig(
        name="demo",
        sources=Sources(paths=["{home}/incoming"]),
        annotate=Annotate(dataset=DATASET, workspace=WORKSPACE, budget=80, min_submitted=2),
        export=Export(test_size=0.3),
        train=Train(min_new_pairs=20, epochs=3.0, max_length=96),
    )


def run_demo(home: str | os.PathLike | None = None, conversations: int = 1_500, seed: int = 0, port: int | None = None,
             on_event: Callable[[str], None] | None = None) -> tuple[dict, object]:
    """Run the demo; returns (summary, server handle). The caller stops the server when it is done with it."""
    from annotations.server import start_background
    from annotations.server.settings import DEFAULT_PORT, ServerSettings
    from loops.simulate import simulate

    say = on_event or (lambda _: None)
    home = resolve_home(home)
    store = Store.open(home)
    incoming = home / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    say("starting the embedded Argilla server …")
    server = start_background(home, port=port or (DEFAULT_PORT if _port_free(DEFAULT_PORT) else None))
    os.environ["ARGILLA_API_URL"], os.environ["ARGILLA_API_KEY"] = server.url, server.api_key
    try:
        config = demo_config()
        start = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
        write_jsonl(incoming / "day-1.jsonl", conversations, seed=seed, siblings=0.3, start=start, id_prefix="day1")
        say(f"run 1: {conversations:,} conversations of day 1")
        first = run_loop(store, config, on_step=_step_printer(say))
        say("simulated annotators (seeded, noisy, not people) rate the pushed records through the Argilla API …")
        simulated = simulate(store, server.url, server.api_key, DATASET, WORKSPACE, seed=seed)
        write_jsonl(incoming / "day-2.jsonl", conversations // 2, seed=seed + 1, siblings=0.3,
                    start=start + dt.timedelta(days=7), id_prefix="day2")
        say(f"run 2: {conversations // 2:,} conversations of day 2, plus the ratings")
        second = run_loop(store, config, on_step=_step_printer(say))
    except BaseException:
        server.stop()
        raise
    settings = ServerSettings.resolve(home)
    summary = {
        "runs": [first, second],
        "simulated_annotation": simulated,
        "report": (second["steps"]["report"]["figures"] or {}).get("out"),
        "gate": (second["steps"]["promote"]["figures"] or {}).get("reason") or second["steps"]["promote"].get("message"),
        "url": server.url,
        "login": {"username": settings.owner, "password": settings.owner_password},
        "status": second["status"],
    }
    return summary, server


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _step_printer(say: Callable[[str], None]) -> Callable[[str, dict], None]:
    def show(name: str, record: dict) -> None:
        note = f" — {record['message'].splitlines()[0][:90]}" if record.get("message") else ""
        if name == "promote" and (record.get("figures") or {}).get("reason"):
            note = f" — {record['figures']['reason']}"  # the gate's decision, promoted or not, and why
        say(f"  {name:<9} {record['status']:<8} {record['seconds']:6.1f}s{note}")

    return show
