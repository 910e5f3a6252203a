"""One way to read settings: option > environment > curate.toml > default, typed from the field types.

A bad value in curate.toml, a loop file or a `CURATE_…` variable is a usage error like a bad option: exit 2 and one
line that names the file or the variable and the key (issue 22, defect 8). An empty variable means "not set".
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from curation.config import SettingError, config_scope, load_config_file

CHAT = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


def _one_line(result) -> str:
    err = result.stderr
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def toml(home):
    home.mkdir(parents=True, exist_ok=True)

    def write(text: str):
        (home / "curate.toml").write_text(text)
        return home / "curate.toml"

    return write


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(CHAT)
    return path


@pytest.mark.parametrize("text, command, named", [
    ("ingest = 5\n", ["ingest", "DATA"], "[ingest]"),
    ('[cluster]\nlabeller = "llm"\n', ["cluster"], "[cluster.labeller]"),
    ("[failure_model]\nrule = 5\n", ["cluster"], "[failure_model] rule"),
    ('[embed]\nbatch_size = "big"\n', ["embed"], "[embed] batch_size"),
    ('[ingest]\nworkers = "two"\n', ["ingest", "DATA"], "[ingest] workers"),
    ("[routing]\nexplore = 1.5\n", ["annotate", "push", "--dataset", "d", "--budget", "1"], "[routing] explore"),
    ("[signals]\nweights = 3\n", ["cluster"], "[signals.weights]"),
])
def test_a_bad_value_in_curate_toml_is_a_usage_error_naming_the_file_and_key(cli, toml, data, text, command, named):
    path = toml(text)
    err = _one_line(cli(*[str(data) if c == "DATA" else c for c in command], code=2))
    assert str(path) in err and named in err


@pytest.mark.parametrize("var, value, command", [
    ("CURATE_EMBED_BATCH_SIZE", "abc", ["embed"]),
    ("CURATE_INGEST_BATCH_SIZE", "many", ["ingest", "DATA"]),
    ("CURATE_LLM_TIMEOUT", "soon", ["cluster", "--labeller", "llm", "--llm-url", "http://127.0.0.1:9/v1",
                                    "--llm-model", "m"]),
    ("CURATE_FAILURE_RULE", "helpfulness is bad", ["cluster"]),
    ("CURATE_GENERATE_TIMEOUT", "abc", ["generate", "--ids", "x", "--url", "http://127.0.0.1:9/v1", "--model", "m"]),
])
def test_a_bad_environment_variable_is_a_usage_error_naming_it(cli, data, monkeypatch, var, value, command):
    monkeypatch.setenv(var, value)
    err = _one_line(cli(*[str(data) if c == "DATA" else c for c in command], code=2))
    assert var in err and "curate.toml" not in err


def test_an_empty_variable_means_not_set(cli, data, monkeypatch):
    for var in ("CURATE_DATABASE_URL", "CURATE_EMBED_BATCH_SIZE", "CURATE_INGEST_WORKERS", "CURATE_FAILURE_RULE"):
        monkeypatch.setenv(var, "")
    assert cli.json("ingest", data)["ingested"] == 1
    assert (cli.home / "curate.db").is_file()  # the default SQLite store, as with the variable unset


def test_the_failure_rule_is_checked_before_clustering_runs(cli, store, data):
    """`--failure-rule` that does not parse: exit 2 before any scoring or clustering (nothing recorded)."""
    from curation.store.tables import runs

    cli("ingest", data)
    err = _one_line(cli("cluster", "--failure-rule", "helpfulness is bad", code=2))
    assert "helpfulness is bad" in err
    with store.connect() as conn:
        kinds = conn.execute(sa.select(runs.c.kind)).scalars().all()
    assert kinds == ["ingest"]


def test_generate_reads_routing_as_push_does(cli, toml, store, data):
    """`generate --budget` routes with curate.toml [routing] too: a mix push refuses is refused by generate."""
    cli("ingest", data)
    path = toml("[routing]\nexplore = 1.5\n")
    for command in (["annotate", "push", "--dataset", "d", "--budget", "1"],
                    ["generate", "--budget", "1", "--url", "http://127.0.0.1:9/v1", "--model", "m"]):
        err = _one_line(cli(*command, code=2))
        assert f"{path} [routing] explore: a share from 0 to 1, not 1.5" in err


def test_generate_chooses_with_the_routing_mix(store, toml, monkeypatch):
    """The same conversations push would choose: generate's choice goes through `routing_strategy`."""
    import annotations.routing as routing
    from annotations.generate import GenerateSettings, generate
    from annotations.generate.config import Endpoint

    toml("[routing]\nuncertain = 0.1\nexplore = 0.9\nnovel_share = 0\n")
    chosen = []

    class Chosen(Exception):
        """Stops generate before any request: the choice is what this test is about."""

    def spy(store, dataset, budget, ids, strategy):
        chosen.append(strategy)
        raise Chosen

    monkeypatch.setattr(routing, "choose", spy)
    with pytest.raises(Chosen):
        generate(store, budget=2, settings=GenerateSettings(endpoints=[Endpoint("http://127.0.0.1:9/v1", "m")]))
    [strategy] = chosen
    assert (strategy.uncertain, strategy.explore, strategy.novel_share) == (0.1, 0.9, 0.0)


def test_curate_toml_is_read_once_per_command(home, toml):
    toml("[embed]\nbatch_size = 4\n")
    with config_scope():
        first = load_config_file(home)
        toml("[embed]\nbatch_size = 8\n")  # a change mid-command is not seen: every setting agrees
        assert load_config_file(home) is first
    assert load_config_file(home)["embed"]["batch_size"] == 8


def test_types_come_from_the_fields(home, toml, monkeypatch):
    from curation.config import IngestSettings, LabellerSettings

    toml('[ingest]\nbatch_size = "300"\n[cluster.labeller]\ntimeout = 5\n')
    monkeypatch.setenv("CURATE_INGEST_WORKERS", "2")
    assert (IngestSettings.resolve(home).batch_size, IngestSettings.resolve(home).workers) == (300, 2)
    assert LabellerSettings.resolve(home).timeout == 5.0
    assert IngestSettings.resolve(home, workers=3).workers == 3  # an option beats the environment
    toml("[ingest]\nbatch_size = true\n")
    with pytest.raises(SettingError, match=r"\[ingest\] batch_size: must be an integer, not True"):
        IngestSettings.resolve(home)
