"""Preference and rating exports from ratings in the store (annotation tables filled per their contract)."""
from __future__ import annotations

import orjson
import pytest

from reward_support import seed_ratings, tiny_decoder
from loops.export import PairRules, build_pairs, export_preferences, export_ratings


@pytest.fixture
def rated(store, oasst_file):
    return seed_ratings(store, oasst_file)


def test_pair_rules_and_disagreement(store, rated):
    pairs, stats = build_pairs(store, PairRules())
    by_rule = {r: [p for p in pairs if p["rule"] == r] for r in ("ratings", "preference", "rewrite", "feedback")}
    assert by_rule["ratings"] and by_rule["preference"] and len(by_rule["rewrite"]) == 1 and not by_rule["feedback"]
    flagged = rated["flagged"]
    assert stats["excluded_disagreement"] > 0
    assert not any(p["conversation_id_chosen"] in flagged or p["conversation_id_rejected"] in flagged for p in pairs)
    for p in by_rule["ratings"]:  # (a) follows helpfulness = 4 - human rank, margin = difference
        assert p["margin"] >= 0.5 and p["prompt"][-1]["role"] == "user" and p["chosen"][0]["role"] == "assistant"
        assert p["cluster_id"] in (0, 1, 2) and p["annotators"] == ["ann1", "ann2"]
    group = rated["groups"][0]
    pref = [p for p in by_rule["preference"] if p["conversation_id_chosen"] == group[0]]
    assert pref and pref[0]["conversation_id_rejected"] == group[1] and pref[0]["margin"] == 2.0  # (b) −2 → A wins
    rewrite = by_rule["rewrite"][0]
    assert rewrite["chosen"][0]["content"].startswith("A better") and rewrite["conversation_id_rejected"] == group[-1]

    with_all, _ = build_pairs(store, PairRules(rules=("ratings", "feedback"), include_disagreement=True, tie_threshold=2.5))
    assert any(p["conversation_id_chosen"] in flagged for p in with_all)
    assert all(p["margin"] >= 2.5 for p in with_all if p["rule"] == "ratings")  # (a) tie threshold
    fb = [p for p in with_all if p["rule"] == "feedback"]  # (d) thumbs-up sibling ≻ thumbs-down sibling
    assert len(fb) == len(rated["groups"]) and all(p["conversation_id_chosen"] == g[0] for p, g in zip(
        sorted(fb, key=lambda p: p["conversation_id_chosen"]), sorted(rated["groups"], key=lambda g: g[0])))
    weighted, _ = build_pairs(store, PairRules(rules=("ratings",), weights={"helpfulness": 1.0, "coherence": 1.0}))
    assert weighted == []  # coherence was never rated, so no weighted score exists


@pytest.mark.smoke
def test_export_formats_split_manifest(store, rated, tmp_path):
    from datasets import load_dataset, load_from_disk

    rules = PairRules(test_size=0.3)
    hf = export_preferences(store, tmp_path / "hf", rules=rules)
    data = load_from_disk(str(tmp_path / "hf"))
    assert hf["pairs"] == hf["train"] + hf["test"] and len(data["train"]) == hf["train"] and hf["test"] > 0
    train_ctx, test_ctx = set(data["train"]["context_id"]), set(data["test"]["context_id"])
    assert not train_ctx & test_ctx  # grouped by context
    assert len(set(data["test"]["cluster_id"])) > 1  # stratified: clusters on both sides
    manifest = orjson.loads((tmp_path / "hf" / "manifest.json").read_bytes())
    assert manifest["counts"]["pairs"] == hf["pairs"] and manifest["source_runs"] == [rated["run_id"]]
    assert manifest["rules"]["tie_threshold"] == 0.5 and manifest["agreement"]["excluded_disagreement"] > 0
    assert "Licence" in (tmp_path / "hf" / "README.md").read_text()
    assert manifest["counts"]["simulated"] == hf["simulated"] == 0 and not any(data["train"]["simulated"])  # people's

    again = export_preferences(store, tmp_path / "again", fmt="jsonl", rules=rules)
    assert again["version"] == hf["version"]  # deterministic for a seed, whatever the format
    jsonl = load_dataset("json", data_files=str(tmp_path / "again" / "test.jsonl"), split="train")
    assert sorted(jsonl["context_id"]) == sorted(data["test"]["context_id"])
    export_preferences(store, tmp_path / "pq", fmt="parquet", rules=rules)
    pq = load_dataset("parquet", data_files={"train": str(tmp_path / "pq" / "train.parquet")}, split="train")
    assert pq.column_names == data["train"].column_names
    assert export_preferences(store, tmp_path / "s1", rules=PairRules(test_size=0.3, seed=1))["version"] != hf["version"]


def test_mix_in_existing_preference_data(store, rated, tmp_path):
    extra = tmp_path / "extra.jsonl"
    extra.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},  # TRL standard format
        {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]},  # implicit prompt
    ]))
    result = export_preferences(store, tmp_path / "out", fmt="jsonl", mix=[str(extra)])
    rows = [orjson.loads(line) for f in ("train.jsonl", "test.jsonl") for line in (tmp_path / "out" / f).read_bytes().splitlines()]
    mixed = [r for r in rows if r["rule"] == "mixed"]
    assert len(mixed) == 2 and {r["source"] for r in mixed} == {str(extra)}
    assert {r["prompt"][0]["content"] for r in mixed} == {"What is 2+2?", "Hi"}
    manifest = orjson.loads((tmp_path / "out" / "manifest.json").read_bytes())
    assert manifest["mixed"] == [{"source": str(extra), "pairs": 2}] and result["pairs"] == len(rows)


def test_export_ratings(store, rated, tmp_path):
    from datasets import load_from_disk

    result = export_ratings(store, tmp_path / "ratings")
    data = load_from_disk(str(tmp_path / "ratings"))
    row = data["train"][0]
    assert row["response"][0]["role"] == "assistant" and row["helpfulness"] is not None and row["coherence"] is None
    n_single = sum(len(g) for g in rated["groups"]) - len(rated["flagged"])
    assert result["rows"] == n_single


def test_no_pairs_says_what_to_do_next_given_what_was_tried_and_what_the_store_holds(store, tmp_path):
    from annotations.tables import annotation_records
    from curation.errors import CurateError
    from curation.store import utcnow

    def why(**rules) -> str:
        with pytest.raises(CurateError) as caught:
            export_preferences(store, tmp_path / "out", rules=PairRules(**rules), dataset="failures")
        return str(caught.value)

    nothing = why()
    assert nothing.startswith("no preference pairs")  # the loop's export step reads this as "nothing to export yet"
    assert "curate annotate push --dataset failures" in nothing and "curate annotate simulate --dataset failures" in nothing
    assert "curate annotate pull --dataset failures" in nothing
    tried = why(rules=("feedback",))
    assert "--rule feedback" in tried and "thumbs-up" in tried and "loosen" not in tried  # tried: not suggested again
    with store.begin() as conn:
        conn.execute(annotation_records.insert(), [{"record_id": f"r{i}", "dataset": "failures", "conversation_id": f"c{i}",
                                                     "pushed_at": utcnow()} for i in range(3)])
    pushed = why()
    assert "3 records were pushed" in pushed and "curate annotate simulate --dataset failures" in pushed


def test_no_pairs_from_ratings_names_the_rules_left_to_loosen(store, rated, tmp_path):
    from curation.errors import CurateError

    with pytest.raises(CurateError) as caught:
        export_preferences(store, tmp_path / "out", rules=PairRules(rules=("ratings",), tie_threshold=9))
    why = str(caught.value)
    assert why.startswith("no preference pairs from ") and "ties under --tie-threshold 9" in why
    assert "--include-disagreement" in why and "--rule feedback" in why
    assert "--rule replaces the default rules" in why


@pytest.mark.slow
def test_trl_reward_trainer_takes_the_export_unchanged(store, rated, tmp_path):
    """TRL 1.16's RewardTrainer trains on our hf export as it is, `margin` column included.

    The base is a decoder with a chat template, as TRL expects: TRL 1.16 passes `margin` on to the model's
    forward, which decoder models absorb in **kwargs and BERT-style encoders reject (a TRL limitation).
    """
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    export_preferences(store, tmp_path / "hf")
    data = load_from_disk(str(tmp_path / "hf"))
    assert {"prompt", "chosen", "rejected", "margin"} <= set(data["train"].column_names)
    base = tiny_decoder(tmp_path / "decoder")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    args = RewardConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2, max_length=2048,
                        report_to="none", use_cpu=True, save_strategy="no", logging_steps=1)
    trainer = RewardTrainer(model=model, args=args, train_dataset=data["train"], processing_class=tokenizer)
    assert trainer.train().global_step == 1


def test_pairs_and_rows_from_simulated_ratings_are_marked_and_counted(store, oasst_file, tmp_path, cli):
    """One simulated annotator on each record: every pair rests on it, and says so wherever it goes."""
    from datasets import load_from_disk

    seed_ratings(store, oasst_file, annotators=("simulated-annotator-1", "ann2"))
    result = cli.json("export", "preferences", "--out", tmp_path / "prefs")
    data = load_from_disk(str(tmp_path / "prefs"))
    assert result["simulated"] == result["pairs"] > 0
    assert all(data["train"]["simulated"]) and all(data["test"]["simulated"])
    assert orjson.loads((tmp_path / "prefs" / "manifest.json").read_bytes())["counts"]["simulated"] == result["pairs"]
    assert "`simulated`" in (tmp_path / "prefs" / "README.md").read_text()
    text = cli("export", "preferences", "--out", tmp_path / "again").stdout
    assert f"{result['pairs']:,} of the {result['pairs']:,} pairs come from simulated annotators' ratings" in text
    rows = cli.json("export", "ratings", "--out", tmp_path / "ratings")
    assert rows["simulated"] == rows["rows"] > 0
    mixed = export_preferences(store, tmp_path / "mixed", fmt="jsonl", rules=PairRules(rules=("feedback",)),
                               mix=[str(tmp_path / "prefs")])  # mixing an export back in keeps the mark
    kept = [orjson.loads(line) for f in ("train.jsonl", "test.jsonl") for line in (tmp_path / "mixed" / f).read_bytes().splitlines()]
    assert all(r["simulated"] for r in kept if r["rule"] == "mixed") and not any(r["simulated"] for r in kept if r["rule"] == "feedback")
    assert mixed["simulated"] == result["pairs"]


@pytest.mark.parametrize("fmt", ["hf", "parquet", "jsonl"])
def test_no_test_split_exports_load_back(store, rated, tmp_path, fmt):
    from loops.reward.data import load_pairs

    result = export_preferences(store, tmp_path / "out", fmt=fmt, rules=PairRules(test_size=0.0))
    assert result["test"] == 0 and result["train"] == result["pairs"] > 0
    assert len(load_pairs(tmp_path / "out")) == result["train"]
    assert load_pairs(tmp_path / "out", split="test") == []
    if fmt == "hf":
        from datasets import load_from_disk

        assert list(load_from_disk(str(tmp_path / "out"))) == ["train"]
