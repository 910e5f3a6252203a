"""The production logging API: buffered writes, feedback by id, and a spool when the store is down."""
from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from curation import ConversationLogger
from curation.ingest import ingest
from curation.store.tables import conversations, feedback

MESSAGES = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]


def test_logs_conversations_and_later_feedback(home, store):
    logger = ConversationLogger(home, batch_size=50, flush_interval=0.05)
    ids = [logger.log([*MESSAGES[:1], {"role": "assistant", "content": f"reply {i}"}], model="m1", user_id="u1") for i in range(120)]
    logger.feedback(ids[0], "thumbs_down")
    logger.feedback(ids[1], "rating", value=2)
    logger.feedback(ids[2], "regenerated")
    logger.flush()
    logger.close()
    assert logger.written == 123 and logger.spooled == 0
    with store.connect() as conn:
        stored = set(conn.execute(sa.select(conversations.c.id)).scalars())
        events = conn.execute(sa.select(feedback.c.conversation_id, feedback.c.type)).all()
    assert stored == set(ids)
    assert sorted(events) == sorted([(ids[0], "thumbs_down"), (ids[1], "rating"), (ids[2], "regenerated")])


def test_log_never_blocks_the_caller(home):
    logger = ConversationLogger(home, batch_size=10_000, flush_interval=5)
    started = time.perf_counter()
    for _ in range(2_000):
        logger.log(MESSAGES)
    assert time.perf_counter() - started < 2.0
    logger.close()


def test_store_unreachable_spools_and_ingest_of_spool_loses_nothing(home, store, tmp_path):
    spool = tmp_path / "spool.jsonl"
    # nothing listens on port 1: every write fails fast, as when the database host is down
    logger = ConversationLogger(home, url="postgresql+psycopg://curate@127.0.0.1:1/curate", batch_size=20,
                                flush_interval=0.05, spool=spool)
    errors: list[BaseException] = []

    def serve():
        try:
            for i in range(100):
                cid = logger.log([*MESSAGES[:1], {"role": "assistant", "content": f"answer {i}"}], id=f"conv-{i}")
                if i % 10 == 0:
                    logger.feedback(cid, "thumbs_down")
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=serve)
    worker.start()
    worker.join()
    logger.flush()
    logger.close()
    assert not errors and logger.written == 0 and logger.spooled == 110
    summary = ingest(store, [spool])
    assert summary["quarantined"] == 0 and summary["ingested"] == 110
    assert store.count(conversations) == 100 and store.count(feedback) == 10


def test_logged_conversations_get_a_utc_created_at_like_their_feedback(home, store):
    import datetime as dt

    logger = ConversationLogger(home, flush_interval=0.05)
    before = dt.datetime.now(dt.timezone.utc)
    cid = logger.log(MESSAGES)
    given = logger.log([*MESSAGES[:1], {"role": "assistant", "content": "other"}], created_at="2026-01-02T03:04:05+00:00")
    logger.feedback(cid, "thumbs_down")
    logger.flush()
    logger.close()
    with store.connect() as conn:
        stamped = dict(conn.execute(sa.select(conversations.c.id, conversations.c.created_at)).all())
        at = conn.execute(sa.select(feedback.c.at)).scalar_one()
    stamp = dt.datetime.fromisoformat(stamped[cid])
    assert stamp.utcoffset() == dt.timedelta(0) and before <= stamp <= dt.datetime.now(dt.timezone.utc)
    assert dt.datetime.fromisoformat(at).utcoffset() == dt.timedelta(0)
    assert dt.datetime.fromisoformat(stamped[given]) == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)  # kept


def test_the_spool_warning_names_the_reason_not_the_conversations(home, store, tmp_path, caplog):
    # the store accepts connections but refuses the insert (as a full disk or a dropped table would): SQLAlchemy's
    # error then carries the statement and its parameters, which are the users' conversations
    with store.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON conversations "
                                 "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        else:
            conn.exec_driver_sql("CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                                 "RAISE EXCEPTION 'database or disk is full'; END $$ LANGUAGE plpgsql")
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON conversations "
                                 "FOR EACH ROW EXECUTE FUNCTION refuse()")
    secret = "my card number is 4111 1111 1111 1111"
    logger = ConversationLogger(home, batch_size=5, flush_interval=0.05, spool=tmp_path / "spool.jsonl")
    with caplog.at_level("WARNING", logger="curate.logger"):
        logger.log([{"role": "user", "content": secret}, {"role": "assistant", "content": "noted"}])
        logger.flush()
        logger.close()
    assert logger.spooled == 1
    warnings = [r.getMessage() for r in caplog.records if "spooling" in r.getMessage()]
    assert warnings and "database or disk is full" in warnings[0]
    assert all(secret not in w and "INSERT" not in w for w in warnings), warnings
