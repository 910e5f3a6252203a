"""The embedded server's SQLite writes (annotations/server/writes.py, one_hop.py), on a real SQLite file through
SQLAlchemy's aiosqlite driver, in a process of their own (the patches are process-wide): concurrent write
transactions queue for their turn instead of failing on SQLite's lock, and a statement's rows, rowcount and
lastrowid come back as the driver's own cursor gives them."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

WRITERS = textwrap.dedent("""
    import asyncio, json, os, sys, tempfile
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    path = os.path.join(tempfile.mkdtemp(), "t.db")

    async def team():
        # busy timeout 0: a writer that finds the lock taken fails at once, so any overlap shows
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0})
        async with engine.begin() as c:
            await c.exec_driver_sql("PRAGMA journal_mode=WAL")
            await c.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, writer INT, n INT)")
            await c.exec_driver_sql("DELETE FROM t")

        async def writer(i):
            ids = []
            try:
                async with engine.connect() as c:
                    for n in range(5):
                        ids.append((await c.exec_driver_sql("INSERT INTO t (writer, n) VALUES (?, ?)", (i, n))).lastrowid)
                        await asyncio.sleep(0.002)  # the transaction stays open while other tasks run
                        updated = await c.exec_driver_sql("UPDATE t SET n = n WHERE writer = ?", (i,))
                        assert updated.rowcount == n + 1, updated.rowcount
                        await c.commit()
                return {"ids": ids}
            except sa.exc.OperationalError as exc:
                await asyncio.sleep(0)
                return {"error": str(exc.orig)}

        outcomes = await asyncio.gather(*(writer(i) for i in range(12)))
        async with engine.connect() as c:
            rows = [list(r) for r in (await c.exec_driver_sql("SELECT id, writer, n FROM t ORDER BY id")).all()]
        await engine.dispose()
        return {"errors": sorted({o["error"] for o in outcomes if "error" in o}),
                "ids": sorted(i for o in outcomes for i in o.get("ids", [])), "rows": rows}

    out = {"plain": asyncio.run(team())}
    from annotations.server import one_hop, writes
    writes.install()
    one_hop.install()
    out["queued"] = asyncio.run(team())
    print(json.dumps(out))
""")


def test_write_transactions_take_turns_instead_of_failing_on_the_lock():
    done = subprocess.run([sys.executable, "-c", WRITERS], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert any("locked" in error for error in out["plain"]["errors"]), out["plain"]["errors"]  # the fault is real
    queued = out["queued"]
    assert queued["errors"] == [] and len(queued["rows"]) == 60
    assert queued["ids"] == [row[0] for row in queued["rows"]]  # lastrowid: the id each INSERT got
    assert sorted((w, n) for _, w, n in queued["rows"]) == [(w, n) for w in range(12) for n in range(5)]
