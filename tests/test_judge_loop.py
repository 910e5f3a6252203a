"""The loop's `judge` step: off (skipped) without endpoints; with a loop file's [judge] it judges new traffic, a
second run asks nothing, and its figures reach the loop report."""
from __future__ import annotations

import pytest

from curation.synthetic import write_jsonl
from loops.loop.config import load
from loops.loop.runner import run_loop
from loops.loop.steps import ingest, judge, report
from tests.chat_fault_server import FaultServer

STEPS = [("ingest", ingest), ("judge", judge), ("report", report)]
SOURCES = '[sources]\npaths = ["{home}/incoming"]\n'


def test_judge_step_is_off_without_endpoints_and_reports_its_figures(store, home, tmp_path):
    write_jsonl(home / "incoming" / "day-1.jsonl", 30, seed=8)
    plain = tmp_path / "plain.toml"
    plain.write_text(f'name = "plain"\n{SOURCES}')
    off = run_loop(store, load(plain), steps=STEPS, progress=False)
    assert off["steps"]["judge"]["status"] == "skipped" and "no judge endpoints" in off["steps"]["judge"]["message"]
    with FaultServer(default="judge") as server:
        loop_file = tmp_path / "judged.toml"
        loop_file.write_text(f'name = "judged"\n{SOURCES}\n[judge]\nconcurrency = 4\n\n[[judge.endpoints]]\n'
                             f'url = "{server.url}"\nmodel = "jm"\n')
        first = run_loop(store, load(loop_file), steps=STEPS, progress=False)
        write_jsonl(home / "incoming" / "day-2.jsonl", 10, seed=9)
        second = run_loop(store, load(loop_file), steps=STEPS, progress=False)
    figures = first["steps"]["judge"]["figures"]
    assert first["status"] == "done" and figures["judged"] == 30 and figures["requests"] == 30
    again = second["steps"]["judge"]["figures"]
    assert again["judged"] == 10 and again["cached"] == 30 and again["requests"] == 10
    html = (home / "reports" / f"loop-{first['run_id']}.html").read_text()
    assert "judge" in html and "judged: 30" in html


def test_a_loop_file_judge_section_is_checked(tmp_path):
    from curation.errors import ConfigError

    bad = tmp_path / "bad.toml"
    bad.write_text('[[judge.endpoints]]\nurl = "http://x/v1"\nmodel = "m"\nn = 3\n')
    with pytest.raises(ConfigError, match="n is always 1"):
        load(bad)
