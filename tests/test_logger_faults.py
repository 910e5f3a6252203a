"""The logger loses nothing when its store is deleted under it, or when its home cannot be written (issue 22)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap

import openai
import orjson
import pytest
import sqlalchemy as sa

from curation import ConversationLogger
from curation.integrations.openai import wrap
from curation.store import Store
from curation.store.tables import conversations
from tests.openai_server import serve

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ask(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]


def test_deleting_the_home_under_the_logger_spools_instead_of_writing_into_the_deleted_file(tmp_path, cli, caplog):
    home = tmp_path / "home"
    logger = ConversationLogger(home, batch_size=5, flush_interval=0.05)
    with serve() as url, caplog.at_level("WARNING", logger="curate.logger"):
        client = wrap(openai.OpenAI(base_url=url, api_key="test"), logger=logger)
        ids = []
        for i in range(60):
            ids.append(client.chat.completions.create(model="m", messages=ask(i)).curate_id)
            if i == 19:
                logger.flush()
                shutil.rmtree(home)
        logger.flush()
        logger.close()
    assert logger.written == 20 and logger.spooled == 40 and logger.lost == 0
    assert any("was deleted" in r.getMessage() and "spooling" in r.getMessage() for r in caplog.records)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700  # the home comes back private
    assert not (home / "curate.db").exists()  # no empty store made where the user deleted one
    summary = cli.json("ingest", *logger.spool.files(), "--home", home)
    assert summary["ingested"] == 40 and summary["quarantined"] == 0
    store = Store.open(home)
    with store.connect() as conn:
        assert set(conn.execute(sa.select(conversations.c.id)).scalars()) == set(ids[20:])
    store.dispose()


def test_a_database_replaced_under_the_logger_is_reopened(tmp_path):
    home = tmp_path / "home"
    logger = ConversationLogger(home, batch_size=1, flush_interval=0.05)
    logger.log(ask(0), id="before")
    logger.flush()
    (home / "curate.db").rename(tmp_path / "moved.db")  # a restore from backup puts another file at the path
    Store.open(home).dispose()
    logger.log(ask(1), id="after")
    logger.flush()
    logger.close()
    store = Store.open(home)
    with store.connect() as conn:
        found = set(conn.execute(sa.select(conversations.c.id)).scalars())
    store.dispose()
    assert "after" in found and logger.lost == 0 and logger.written + logger.spooled == 2


def _without_dac_override() -> list[str]:
    """A command prefix that runs a child without the capability to ignore file modes (root's DAC override)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, and setpriv (util-linux) is missing to drop CAP_DAC_OVERRIDE")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]


LOG_TWENTY = textwrap.dedent("""
    import json, logging, sys
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from curation import ConversationLogger
    logger = ConversationLogger(sys.argv[1], batch_size=5, flush_interval=0.05)
    for i in range(20):
        logger.log([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}], id=f"conv-{i}")
    logger.flush()
    logger.close()
    print(json.dumps({"written": logger.written, "spooled": logger.spooled, "lost": getattr(logger, "lost", None)}))
""")


def test_an_unwritable_home_spools_to_a_fallback_folder(tmp_path, cli):
    home = tmp_path / "home"
    home.mkdir(mode=0o500)  # exists, but this process may not write in it
    os.chmod(home, 0o500)
    state, temp = tmp_path / "state", tmp_path / "temp"
    state.mkdir()
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": REPO, "XDG_STATE_HOME": str(state), "TMPDIR": str(temp)}
    env.pop("CURATE_DATABASE_URL", None)
    done = subprocess.run([*_without_dac_override(), sys.executable, "-c", LOG_TWENTY, str(home)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout.splitlines()[-1])
    assert result["spooled"] == 20 and result["lost"] == 0, done.stderr
    files = sorted(tmp_path.rglob("*.jsonl"))
    assert [f.parent for f in files] == [state / "curate" / "spool"]
    assert "Permission denied" in done.stderr and "spooling" in done.stderr
    os.chmod(home, 0o700)
    summary = cli.json("ingest", *files, "--home", home)
    assert summary["ingested"] == 20


def test_with_no_place_to_spool_records_wait_in_memory_and_loss_is_loud(tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the spool folder should be")
    down = "postgresql+psycopg://curate@127.0.0.1:1/curate"  # nothing listens on port 1
    logger = ConversationLogger(tmp_path / "home", url=down, spool=blocker / "spool.jsonl", spool_fallbacks=[],
                                batch_size=5, flush_interval=0.05, retry_interval=0.05)
    for i in range(10):
        logger.log(ask(i), id=f"conv-{i}")
    logger.flush()
    assert logger.spooled == 0 and logger.lost == 0  # held, not dropped
    blocker.unlink()  # the spool folder can be made now: the next retry writes what was held
    logger.flush()
    logger.close()
    assert logger.spooled == 10 and logger.lost == 0
    assert sorted(r["id"] for r in map(orjson.loads, (blocker / "spool.jsonl").read_bytes().splitlines())) == \
        sorted(f"conv-{i}" for i in range(10))

    stuck = tmp_path / "stuck"
    stuck.write_text("x")
    small = ConversationLogger(tmp_path / "home", url=down, spool=stuck / "spool.jsonl", spool_fallbacks=[],
                               batch_size=5, flush_interval=0.05, max_pending=6)
    with caplog.at_level("ERROR", logger="curate.logger"):
        for i in range(10):
            small.log(ask(i))
        small.flush()
        small.close()
    assert small.lost == 10 and small.spooled == 0 and small.written == 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("LOST 4" in e for e in errors) and any("LOST 6" in e and "at close" in e for e in errors)
