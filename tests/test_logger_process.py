"""The logger's writer process: batches are validated and inserted outside the app's process, so the app's threads
never wait for the GIL behind them; and nothing is lost when that process dies, or when the app ends without
`close()` (issue 22: the logger's p99 overhead)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pytest
import sqlalchemy as sa

from curation import ConversationLogger
from curation.integrations import recorder
from curation.store import Store
from curation.store.tables import conversations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ask(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i} " + "words " * 40}, {"role": "assistant", "content": f"a{i}"}]


def stored_ids(home, url=None) -> set[str]:
    store = Store.open(home, url)
    with store.connect() as conn:
        found = set(conn.execute(sa.select(conversations.c.id)).scalars())
    store.dispose()
    return found


def thread_cpu(*threads) -> float:
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident)) for t in threads)


def test_batches_are_written_by_another_process_and_cost_this_one_little_cpu(home, database_url):
    cpu = {}
    for process in (False, True):
        logger = ConversationLogger(home, url=database_url, batch_size=500, flush_interval=0.05, process=process)
        for i in range(3000):
            logger.log(ask(i), id=f"{process}-{i}")
        logger.flush(timeout=120)
        # the CPU time of the logger's own threads in this process (the app's threads do the same work either way)
        cpu[process] = thread_cpu(logger._sender, logger._reader) if process else thread_cpu(logger._writer._thread)
        assert (logger.writer_pid not in (None, os.getpid())) is process
        logger.close()
        assert logger.written == 3000 and logger.spooled == 0 and logger.lost == 0
    assert len(stored_ids(home, database_url)) == 6000
    # in-process, validation and insert cost this process's CPU (and hold its GIL); with the writer process, only
    # serialising each record and writing it to a pipe does
    assert cpu[True] < 0.3 * cpu[False], cpu


def test_a_writer_process_that_dies_is_replaced_by_a_thread_and_the_loss_is_counted(home, database_url, caplog):
    logger = ConversationLogger(home, url=database_url, batch_size=5, flush_interval=0.05)
    for i in range(10):
        logger.log(ask(i), id=f"before-{i}")
    logger.flush()
    assert logger.written == 10
    os.kill(logger.writer_pid, signal.SIGKILL)
    time.sleep(0.5)
    with caplog.at_level("ERROR", logger="curate.logger"):
        for i in range(20):
            logger.log(ask(i), id=f"after-{i}")
        logger.flush(timeout=10)
        logger.close()
    assert logger.writer_pid is None
    assert logger.written == 30 and logger.lost == 0, (logger.written, logger.spooled, logger.lost)
    assert any("writer process" in r.getMessage() and "LOST 0" in r.getMessage() for r in caplog.records)
    assert {f"after-{i}" for i in range(20)} <= stored_ids(home, database_url)


EXIT_WITHOUT_CLOSE = textwrap.dedent("""
    import os, sys, time
    from curation import ConversationLogger
    logger = ConversationLogger(sys.argv[1], batch_size=1000, flush_interval=5)
    for i in range(200):
        logger.log([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}], id=f"conv-{i}")
        if i == 99:
            logger.flush()  # the writer process is up
    time.sleep(1)  # the rest are handed over to it, and wait there for a fuller batch
    print(logger.writer_pid, flush=True)
    os._exit(0)  # killed, or os._exit: no atexit, no close()
""")


def test_records_handed_over_are_written_when_the_app_ends_without_close(tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_DATABASE_URL", raising=False)
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_CLOSE, str(home)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert done.returncode == 0, done.stderr
    writer = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{writer}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored_ids(home) == {f"conv-{i}" for i in range(200)}


def test_wrapped_calls_get_ids_without_a_system_call(monkeypatch):
    # os.urandom (uuid4's source) releases the GIL: with the app's other threads busy, getting it back took
    # milliseconds, in the middle of the call the app is timing
    def no_syscall(n):
        raise AssertionError("os.urandom called on the app's thread")

    monkeypatch.setattr(os, "urandom", no_syscall)
    ids = [recorder.Call({"model": "m", "messages": ask(0)}).id for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_never_repeats_its_parents_ids():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's counter, but a key of its own
        os.write(write, orjson.dumps([recorder.new_id() for _ in range(5)]))
        os._exit(0)
    os.close(write)
    parent = [recorder.new_id() for _ in range(5)]
    os.waitpid(pid, 0)
    child = orjson.loads(os.read(read, 1 << 16))
    os.close(read)
    assert not set(parent) & set(child)


INTERACTIVE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})  # as a notebook does: curation found through sys.path, not PYTHONPATH
    from curation import ConversationLogger
    logger = ConversationLogger({home!r}, batch_size=5, flush_interval=0.05)
    ids = [logger.log([{{"role": "user", "content": f"q{{i}}"}}, {{"role": "assistant", "content": "a"}}]) for i in range(7)]
    logger.flush()
    print(logger.writer_pid is not None, logger.written)
""")


def test_an_interactive_session_that_found_curation_on_sys_path_starts_the_writer_process(tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_DATABASE_URL", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = INTERACTIVE.format(repo=REPO, home=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)  # a script on stdin: no __main__ file, as in a notebook
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "7"], done.stderr
