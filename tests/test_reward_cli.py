"""The whole learning stage through the CLI: export preferences → reward train → eval → promote → score → list."""
from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa

from reward_support import seed_ratings


@pytest.mark.smoke
def test_export_train_eval_promote_score(cli, store, oasst_file, tmp_path):
    from curation.store.failure_tables import rewards

    seed_ratings(store, oasst_file, n_groups=12)
    exp = cli.json("export", "preferences", "--out", tmp_path / "prefs", "--format", "jsonl", "--test-size", "0.3")
    assert set(exp) >= {"pairs", "train", "test", "out"} and exp["test"] > 0
    ratings = cli.json("export", "ratings", "--out", tmp_path / "ratings")
    assert ratings["rows"] > 0

    trained = cli.json("reward", "train", "--data", tmp_path / "prefs", "--out", tmp_path / "rm",
                       "--max-steps", "2", "--max-length", "64", "--batch-size", "4")
    assert set(trained) >= {"model", "loss", "train_pairs", "eval_accuracy", "seconds"}
    assert trained["train_pairs"] == exp["train"] and trained["loss"] == "bt"

    ev = cli.json("reward", "eval", "--model", tmp_path / "rm", "--pairs", tmp_path / "prefs" / "test.jsonl")
    assert ev["n"] == exp["test"] and set(ev["by_cluster"]) and ev["accuracy"] == trained["eval_accuracy"]

    fail = cli("reward", "score", code=1)
    assert "promote" in fail.stderr and "Traceback" not in fail.stderr
    # two training steps learn nothing: the gate compares with "longer answer wins" on the same pairs and says why
    gated = cli.json("reward", "promote", trained["version"], "--gate", tmp_path / "prefs" / "test.jsonl")
    figures = gated["figures"]
    assert gated["decision"] == "rejected" and figures["challenger_accuracy"] < figures["length_baseline"]
    assert gated["reason"].startswith(f"rejected: {figures['challenger_accuracy']:.3f} is below the longer-answer "
                                      f"baseline's {figures['length_baseline']:.3f} on the same {figures['n']} gate pairs")
    forced = cli("reward", "promote", tmp_path / "rm", "--force").stdout  # the folder names its model; the gate set stays fixed
    assert forced.startswith(f"{trained['version']} promoted (forced) although")
    assert "  length baseline: " in forced and "95% CI" in forced and "allowed drop 0.000 (tolerance)" in forced
    scored = cli.json("reward", "score")
    assert scored["scored"] == sum(1 for _ in range(store.count(rewards))) > 0
    assert cli.json("reward", "score")["scored"] == 0
    listed = cli.json("reward", "list")["models"]
    assert [m["status"] for m in listed] == ["champion"] and listed[0]["data_version"] == orjson.loads(
        (tmp_path / "prefs" / "manifest.json").read_bytes())["version"]
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count(sa.distinct(rewards.c.model_version)))).scalar_one() == 1


def test_train_options_default_to_the_library_defaults():
    """`curate reward train` without options trains what `TrainConfig()` (and the docs) describe."""
    from curation.cli.reward import train
    from loops.reward import TrainConfig

    defaults = {p.name: p.default for p in train.params}
    config = TrainConfig()
    for name in ("epochs", "batch_size", "learning_rate", "max_length", "max_steps", "seed"):
        assert defaults[name] == getattr(config, name), name
