"""`kill -9` in the middle of a 200k-conversation ingest, then the same command again: the store equals a clean ingest."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
import sqlalchemy as sa

from curation.ingest.records import Limits, chat_record
from curation.synthetic import write_jsonl
from curation.store import Store
from curation.store.tables import conversations, feedback

N = 200_000


@pytest.mark.slow
@pytest.mark.pg
def test_kill_9_mid_ingest_then_rerun_equals_clean_ingest(home, tmp_path):
    path = write_jsonl(tmp_path / "traffic.jsonl", N, seed=11)
    cmd = [sys.executable, "-m", "curation.cli.main", "ingest", str(path), "--json"]
    store = Store.open(home)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while store.count(conversations) < N // 4:  # let it commit a good share of batches first
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = store.count(conversations)
    assert 0 < partial < N, "the kill should land mid-ingest"

    rerun = subprocess.run(cmd, capture_output=True, timeout=600, check=True)
    summary = orjson.loads(rerun.stdout)
    assert summary["read"] == N and summary["quarantined"] == 0
    assert summary["duplicates"] == partial and summary["ingested"] == N - partial

    # a clean ingest stores exactly these conversation and feedback ids
    limits = Limits()
    expected_conv, expected_fb = set(), set()
    with open(path, "rb") as handle:
        for line in handle:
            conv = chat_record(orjson.loads(line), limits)
            expected_conv.add(conv.id)
            expected_fb.update(f[0] for f in conv.feedback)
    with store.connect() as conn:
        conv_ids = conn.execute(sa.select(conversations.c.id)).scalars().all()
        fb_ids = conn.execute(sa.select(feedback.c.id)).scalars().all()
    assert len(conv_ids) == len(set(conv_ids)) == N and set(conv_ids) == expected_conv
    assert len(fb_ids) == len(set(fb_ids)) and set(fb_ids) == expected_fb
    store.dispose()
