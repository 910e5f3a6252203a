"""Exports write only into an empty folder or an earlier export, unless --overwrite; never into the Curate home."""
from __future__ import annotations

import orjson
import pytest

from reward_support import seed_ratings


@pytest.fixture
def rated(store, oasst_file):
    return seed_ratings(store, oasst_file)


def test_a_folder_with_other_files_is_refused_unless_overwrite(cli, store, rated, tmp_path):
    out = tmp_path / "work"
    out.mkdir()
    (out / "train.jsonl").write_text("my own training data\n")
    for command in (("preferences", "--format", "jsonl"), ("ratings", "--format", "jsonl")):
        refused = cli("export", *command, "--out", out, code=1)
        assert "--overwrite" in refused.stderr and "empty" in refused.stderr and str(out) in refused.stderr
        assert (out / "train.jsonl").read_text() == "my own training data\n"
    written = cli.json("export", "preferences", "--format", "jsonl", "--out", out, "--overwrite")
    assert written["pairs"] > 0 and b'"chosen"' in (out / "train.jsonl").read_bytes()


def test_the_curate_home_is_refused_even_with_overwrite(cli, home, store, rated):
    before = sorted(p.name for p in home.iterdir())
    for extra in ((), ("--overwrite",)):
        refused = cli("export", "preferences", "--format", "jsonl", "--out", home, *extra, code=1)
        assert "Curate home" in refused.stderr
    assert sorted(p.name for p in home.iterdir()) == before and not (home / "train.jsonl").exists()


def test_an_earlier_export_is_replaced_whole_and_other_files_stay(cli, store, rated, tmp_path):
    out = tmp_path / "prefs"
    cli.json("export", "preferences", "--out", out)  # hf: dataset_dict.json and train/, test/
    (out / "notes.txt").write_text("mine")
    again = cli.json("export", "preferences", "--format", "jsonl", "--out", out)
    names = {p.name for p in out.iterdir()}
    assert names == {".curate-export", "manifest.json", "README.md", "train.jsonl", "test.jsonl", "notes.txt"}
    assert orjson.loads((out / "manifest.json").read_bytes())["version"] == again["version"]
    # an export made before the marker existed is known by its manifest; an interrupted one by its marker
    (out / ".curate-export").unlink()
    cli.json("export", "ratings", "--format", "jsonl", "--out", out)
    (out / "manifest.json").unlink()
    (out / "README.md").unlink()
    cli.json("export", "preferences", "--format", "parquet", "--out", out)
    assert {p.name for p in out.iterdir()} >= {"train.parquet", "test.parquet"} and not (out / "train.jsonl").exists()


def test_the_library_checks_too(store, rated, tmp_path):
    from curation.errors import CurateError
    from loops.export import export_preferences

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.csv").write_text("a,b\n")
    with pytest.raises(CurateError, match="--overwrite"):
        export_preferences(store, tmp_path / "x", fmt="jsonl")
    with pytest.raises(CurateError, match="is a file"):
        export_preferences(store, tmp_path / "x" / "data.csv", fmt="jsonl")
    assert export_preferences(store, tmp_path / "x", fmt="jsonl", overwrite=True)["pairs"] > 0
    assert (tmp_path / "x" / "data.csv").read_text() == "a,b\n"
