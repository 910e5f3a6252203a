"""A judge of known quality: an OpenAI-compatible chat-completions server on 127.0.0.1 that answers `curate judge`'s
requests from the truth plus seeded noise. For benchmarks and tests only.

    judge = SimulatedJudge.for_store(store, noise=1.0, seed=0)    # oasst1 or curation.synthetic traffic
    with serve(judge) as base_url: ...                             # http://127.0.0.1:PORT/v1
    python benchmarks/simulated_judge.py --home HOME --noise 1.0   # a process of its own; prints its URL

The truth is what people (or the generator) say about the rated reply:
- oasst1: the review labels of the last reply, mapped to 0–4 as the simulated annotator maps them
  (benchmarks/oasst_ratings.py): helpfulness = round(4·quality), correctness = round(4·(1 − fails_task));
- curation.synthetic traffic: the planted failure of the last reply (metadata.demo_truth): helpfulness and correctness
  1 for a failure, else 3, as benchmarks/failure_learning.py's simulated annotator rates it.
Coherence follows helpfulness; complexity and verbosity are 2. An attribute without truth reads 2.

The judge's reading of each attribute is truth + σ·z, rounded and clipped to 0–4, where z is standard normal and
shared by the five attributes for 70% of its variance (a judge that misreads a reply misreads it on every attribute),
drawn from (seed, conversation id): the same judge gives the same answer every time. σ = `noise`; on oasst1 σ from
0.6 to 3 moves the quadratic κ with people on helpfulness from about 0.8 to 0.2 (benchmarks/judge.py prints it).

The server finds the conversation in the request by its messages' text (each message's last 300 characters,
whitespace collapsed: the last reply's must appear in the request, and the conversation with the largest share of
its messages found wins); a request it cannot place gets 2s and counts in `judge.unmatched`. A model named "garbage" answers prose, for the unparseable path.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
SHARED = 0.7  # the share of the noise's variance common to the five attributes
KEY = 300


def _norm(text: str) -> str:
    """The last KEY characters, whitespace collapsed: the judge cuts long conversations from the front."""
    return " ".join(str(text or "").split())[-KEY:]


def store_truth(store) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """({conversation_id: {attribute: 0–4 or None}}, {conversation_id: messages}) for oasst1 or sample traffic."""
    from benchmarks.oasst_ratings import oasst_ratings

    truth, messages = {}, {}
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, messages, metadata FROM conversations ORDER BY id")).all()
    for cid, text, metadata in rows:
        messages[cid] = orjson.loads(text)
        meta = orjson.loads(metadata or "{}") or {}
        if "demo_truth" in meta:
            bad = meta["demo_truth"].get("last_answer_failure") is not None
            truth[cid] = {"helpfulness": 1 if bad else 3, "correctness": 1 if bad else 3}
    for row in oasst_ratings(store):
        truth[row["conversation_id"]] = {"helpfulness": row["helpfulness"], "correctness": row["correctness"]}
    return truth, messages


class SimulatedJudge:
    """Answers for conversations from `truth` ({id: {attribute: 0–4 or None}}) plus noise σ = `noise`, seeded."""

    def __init__(self, truth: dict[str, dict], messages: dict[str, list[dict]] | None = None, noise: float = 1.0,
                 seed: int = 0):
        self.truth, self.noise, self.seed = truth, noise, seed
        self.messages = messages or {}
        self.unmatched = 0
        self.requests = 0
        self._index: dict[str, list[str]] = {}
        for cid, msgs in self.messages.items():
            replies = [m for m in msgs if m.get("role") == "assistant"]
            if replies:
                self._index.setdefault(_norm(replies[-1].get("content")), []).append(cid)

    @classmethod
    def for_store(cls, store, noise: float = 1.0, seed: int = 0) -> "SimulatedJudge":
        truth, messages = store_truth(store)
        return cls(truth, messages, noise, seed)

    def rate(self, conversation_id: str | None) -> dict:
        """The judge's answer: the five attributes (0–4) and a rationale."""
        known = self.truth.get(conversation_id) or {}
        base = {"helpfulness": known.get("helpfulness"), "correctness": known.get("correctness"),
                "coherence": known.get("helpfulness"), "complexity": 2, "verbosity": 2}
        digest = hashlib.sha256(f"{self.seed}:{conversation_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        common, own = rng.standard_normal(), rng.standard_normal(len(ATTRIBUTES))
        z = np.sqrt(SHARED) * common + np.sqrt(1 - SHARED) * own
        out = {}
        for (name, value), zi in zip(base.items(), z):
            value = 2 if value is None else value
            out[name] = int(np.clip(np.floor(value + self.noise * zi + 0.5), 0, 4))
        out["rationale"] = f"simulated judge (noise {self.noise:g}, seed {self.seed})"
        return out

    def place(self, text: str) -> str | None:
        """The conversation whose last reply appears in `text` and most of whose other messages do too, or None."""
        flat = " ".join(text.split())
        best, size = None, (0.0, 0)
        for key, cids in self._index.items():
            if key and key in flat:
                for cid in cids:
                    found = sum(1 for m in self.messages[cid] if (p := _norm(m.get("content"))) and p in flat)
                    if (found / len(self.messages[cid]), found) > size:
                        best, size = cid, (found / len(self.messages[cid]), found)
        return best

    def answer(self, request: dict) -> dict:
        """The chat-completion response to one request."""
        self.requests += 1
        text = " ".join(str(m.get("content") or "") for m in request.get("messages", []) if m.get("role") != "system")
        cid = self.place(text)
        if cid is None:
            self.unmatched += 1
        if request.get("model") == "garbage":
            content = "I think this reply is rather good, perhaps a three out of four."
        else:
            content = orjson.dumps(self.rate(cid)).decode()
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(content.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": f"judge-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model") or "simulated-judge", "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}


def write_judgements(store, judge: SimulatedJudge, ids: list[str] | None = None, model: str = "simulated-judge",
                     rubric_version: str = "simulated") -> int:
    """Store the answers the server would give for `ids` (default: every conversation) straight into `judgements`,
    without the HTTP round trip: what benchmarks sweep many judges with."""
    from curation.store import utcnow
    from curation.store.judge_tables import judgements

    ids = sorted(judge.messages) if ids is None else ids
    now = utcnow()
    rows = []
    for cid in ids:
        answer = judge.rate(cid)
        content = hashlib.sha256(orjson.dumps(judge.messages.get(cid, []))).hexdigest()
        rows.append({"conversation_id": cid, "content_hash": content, "model": model, "rubric_version": rubric_version,
                     "endpoint": "simulated", **{a: answer[a] for a in ATTRIBUTES}, "rationale": answer["rationale"],
                     "status": "ok", "tokens": 0, "judged_at": now, "run_id": None})
    with store.begin() as conn:
        conn.execute(judgements.delete().where(judgements.c.model == model))
        for start in range(0, len(rows), 1000):
            conn.execute(judgements.insert(), rows[start : start + 1000])
    return len(rows)


def helpfulness_kappa(judge: SimulatedJudge) -> float:
    """Quadratic κ between the judge's helpfulness and the truth's, over conversations with a helpfulness truth."""
    from sklearn.metrics import cohen_kappa_score

    ids = [c for c, t in judge.truth.items() if t.get("helpfulness") is not None]
    a = [judge.truth[c]["helpfulness"] for c in ids]
    b = [judge.rate(c)["helpfulness"] for c in ids]
    return float(cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5))))


def _handler(judge: SimulatedJudge):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # the name http.server calls
            body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                status, payload = 404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}}
            else:
                status, payload = 200, judge.answer(body)
            data = orjson.dumps(payload)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextlib.contextmanager
def serve(judge: SimulatedJudge) -> Iterator[str]:
    """Serve `judge` on 127.0.0.1 (an ephemeral port) in a thread; yields the base URL (…/v1)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(judge))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    from curation.store import Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="a Curate home holding oasst1 or sample traffic")
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3600, help="serve this long, then stop")
    args = parser.parse_args()
    judge = SimulatedJudge.for_store(Store.open(args.home), args.noise, args.seed)
    with serve(judge) as url:
        print(f"{url}  (helpfulness κ with the truth {helpfulness_kappa(judge):.2f})", flush=True)
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
