"""Out-of-range options and broken loop files are usage errors: exit 2 and a message naming the option (or the file
and key) and what is allowed, never a traceback or a silent wrong result."""
from __future__ import annotations

from pathlib import Path

import pytest

# (arguments, the option named in the message, the allowed range as the message states it); "{tmp}" is a folder
# that exists, so that every other argument is valid and only the option under test is wrong.
BAD = [
    (["ingest", "x.jsonl", "--max-messages", "-1"], "--max-messages", "x>=1"),
    (["ingest", "x.jsonl", "--max-messages", "0"], "--max-messages", "x>=1"),
    (["ingest", "x.jsonl", "--max-chars", "0"], "--max-chars", "x>=1"),
    (["embed", "--batch-size", "0"], "--batch-size", "x>=1"),
    (["embed", "--threads", "0"], "--threads", "x>=1"),
    (["cluster", "--k", "0"], "--k", "integer ≥ 2"),
    (["cluster", "--k", "1"], "--k", "integer ≥ 2"),
    (["cluster", "--seed", "-1"], "--seed", "0<=x<=4294967295"),
    (["clusters", "--top", "0"], "--top", "x>=1"),
    (["clusters", "--min-users", "0"], "--min-users", "x>=1"),
    (["clusters", "show", "1", "-n", "0"], "-n", "x>=1"),
    (["report", "--out", "{tmp}/r.html", "--top", "0"], "--top", "x>=1"),
    (["report", "--out", "{tmp}/r.html", "--points", "5"], "--points", "x>=100"),
    (["annotate", "serve", "--port", "70000"], "--port", "1<=x<=65535"),
    (["annotate", "serve", "--port", "-1"], "--port", "1<=x<=65535"),
    (["annotate", "serve", "--port", "0"], "--port", "1<=x<=65535"),
    (["annotate", "push", "--dataset", "d", "--budget", "-5"], "--budget", "x>=1"),
    (["annotate", "push", "--dataset", "d", "--budget", "0"], "--budget", "x>=1"),
    (["annotate", "push", "--dataset", "d", "--min-submitted", "0"], "--min-submitted", "x>=1"),
    (["export", "preferences", "--out", "{tmp}/p", "--test-size", "1.5"], "--test-size", "0<=x<1"),
    (["export", "preferences", "--out", "{tmp}/p", "--test-size", "-0.2"], "--test-size", "0<=x<1"),
    (["export", "preferences", "--out", "{tmp}/p", "--test-size", "1"], "--test-size", "0<=x<1"),
    (["export", "preferences", "--out", "{tmp}/p", "--tie-threshold", "-1"], "--tie-threshold", "x>=0"),
    (["export", "preferences", "--out", "{tmp}/p", "--weights", "helpfulness"], "--weights", "NAME=NUMBER"),
    (["export", "ratings", "--out", "{tmp}/r", "--test-size", "1.5"], "--test-size", "0<=x<1"),
    (["export", "ratings", "--out", "{tmp}/r", "--test-size", "-0.2"], "--test-size", "0<=x<1"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--epochs", "-1"], "--epochs", "x>0"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--epochs", "0"], "--epochs", "x>0"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--batch-size", "0"], "--batch-size", "x>=1"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--learning-rate", "0"], "--learning-rate", "x>0"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--learning-rate", "-1e-5"], "--learning-rate", "x>0"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--max-length", "0"], "--max-length", "x>=8"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--max-steps", "0"], "--max-steps", "-1"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--max-steps", "-2"], "--max-steps", "-1"),
    (["reward", "train", "--data", "{tmp}", "--out", "{tmp}/m", "--seed", "-1"], "--seed", "0<=x<=4294967295"),
    (["reward", "promote", "v1", "--tolerance", "-0.1"], "--tolerance", "0<=x<=1"),
    (["reward", "promote", "v1", "--tolerance", "1.5"], "--tolerance", "0<=x<=1"),
    (["reward", "score", "--batch-size", "0"], "--batch-size", "x>=1"),
    (["loop", "history", "--limit", "0"], "--limit", "x>=1"),
    (["demo", "--conversations", "0"], "--conversations", "x>=1"),
    (["demo", "--port", "70000"], "--port", "1<=x<=65535"),
]


@pytest.mark.parametrize("args, option, allowed", BAD, ids=[" ".join(a[:2] + a[-2:]) for a, _, _ in BAD])
def test_out_of_range_option_is_a_usage_error(cli, tmp_path, args, option, allowed):
    result = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], code=2)
    assert f"Invalid value for '{option}'" in result.stderr and allowed in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (cli.home / "curate.db").exists()  # rejected before anything ran


@pytest.mark.parametrize("text, named", [
    ("[embed\nmodel = 'x'", "invalid TOML"),
    ("[embed]\nmodle = 'x'", "unknown key 'embed.modle'"),
    ("[annotate]\nbudget = 0", "'annotate.budget'"),
    ("[export]\ntest_size = 1.5", "'export.test_size'"),
    ("[train]\nepochs = -1", "'train.epochs'"),
    ("[cluster]\nseed = -1", "'cluster.seed'"),
])
def test_broken_loop_file_is_a_usage_error_naming_file_and_key(cli, tmp_path, text, named):
    path = tmp_path / "loop.toml"
    path.write_text(text)
    result = cli("loop", "run", "--config", path, "--json", code=2)
    assert f"Error: {path}: " in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (cli.home / "curate.db").exists()


def test_out_of_range_ingest_settings_fail_naming_the_setting(cli, home, tmp_path, monkeypatch):
    """curate.toml and the environment are checked like the options: no silent quarantine of everything."""
    data = tmp_path / "one.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n')
    monkeypatch.setenv("CURATE_INGEST_MAX_MESSAGES", "-1")
    err = cli("ingest", data, code=2).stderr  # a bad setting is a usage error (issue 22, defect 8)
    assert "max_messages = -1 must be an integer ≥ 1" in err and "CURATE_INGEST_MAX_MESSAGES" in err
    monkeypatch.delenv("CURATE_INGEST_MAX_MESSAGES")
    home.mkdir(parents=True, exist_ok=True)
    (home / "curate.toml").write_text("[ingest]\nworkers = 0\n")
    assert "workers = 0 must be an integer ≥ 1" in cli("ingest", data, code=2).stderr
    (home / "curate.toml").write_text("[ingest]\nbatch_size = 0\n")
    assert "batch_size = 0 must be an integer ≥ 1" in cli("ingest", data, code=2).stderr
    (home / "curate.toml").unlink()
    assert cli.json("ingest", data)["ingested"] == 1


def test_test_size_zero_is_allowed_and_means_no_test_split(cli, store, oasst_file, tmp_path):
    from reward_support import seed_ratings

    seed_ratings(store, oasst_file, n_groups=6)
    out = cli.json("export", "preferences", "--out", tmp_path / "p", "--format", "jsonl", "--test-size", "0")
    assert out["pairs"] > 0 and out["test"] == 0 and out["train"] == out["pairs"]


def test_a_renamed_loop_key_still_loads_with_a_warning_naming_its_line(tmp_path):
    import warnings

    from curation.errors import ConfigError
    from loops.loop.config import load

    old = tmp_path / "old.toml"
    old.write_text('name = "old"\n\n[export]\ntest_fraction = 0.3\n')
    with pytest.warns(FutureWarning, match=r"'export.test_fraction' is deprecated: rename it to 'export.test_size'") as seen:
        assert load(old).export.test_size == 0.3
    assert (seen[0].filename, seen[0].lineno) == (str(old), 4)
    new = tmp_path / "new.toml"
    new.write_text("[export]\ntest_size = 0.3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(new).export.test_size == 0.3
    both = tmp_path / "both.toml"
    both.write_text("[export]\ntest_size = 0.3\ntest_fraction = 0.2\n")
    with pytest.raises(ConfigError, match="keep only 'test_size'"):
        load(both)


def test_the_tour_and_the_nightly_loop_use_one_dataset():
    import re
    import warnings

    from annotations.push import DEFAULT_WORKSPACE
    from loops.loop.config import LoopConfig, load

    repo = Path(__file__).resolve().parent.parent
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped loop file uses no deprecated names
        nightly = load(repo / "loops" / "nightly.toml")
    tour = (repo / "README.md").read_text()
    assert set(re.findall(r"--dataset (\S+)", tour)) == {nightly.annotate.dataset} == {LoopConfig().annotate.dataset}
    assert "--workspace" not in tour and nightly.annotate.workspace == LoopConfig().annotate.workspace == DEFAULT_WORKSPACE


def test_demo_no_serve_does_not_point_at_a_server_that_is_gone():
    from curation.cli.demo import closing

    summary = {"report": "/h/reports/r.html", "url": "http://127.0.0.1:6900", "login": {"username": "argilla", "password": "12345678"}}
    assert "Argilla: http://127.0.0.1:6900  (login argilla / 12345678)" in closing(summary, served=True, home=None)
    stopped = closing(summary, served=False, home="/h")
    assert "http://" not in stopped and "Argilla: stopped (--no-serve); `curate annotate serve --home /h`" in stopped
