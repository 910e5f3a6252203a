"""`curate export preferences` and `curate export ratings`: datasets for reward-model training (loops.export)."""
from __future__ import annotations

import click

from curation.cli.common import HELD_OUT, home_option, json_option, reports
from loops.export_config import RULES, PairRules

_RULES = PairRules()

FORMAT = click.option("--format", "fmt", type=click.Choice(["hf", "parquet", "jsonl"]), default="hf", show_default=True,
                      help="hf = datasets.save_to_disk folder; parquet/jsonl = train and test files.")
TEST_SIZE = click.option("--test-size", type=HELD_OUT, default=_RULES.test_size, show_default=True,
                         help="Share of contexts (prompts) held out as the test split, for `reward eval` and the gate; "
                              "a context's pairs are never on both sides (0: no test split).")
SPLIT_SEED = click.option("--seed", type=int, default=_RULES.seed, show_default=True,
                          help="Seed of the train/test split: the same ratings and seed give the same split.")
OVERWRITE = click.option("--overwrite", is_flag=True,
                         help="Write into --out even if it holds files that are not an earlier export (never the home).")


@click.command("preferences")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@FORMAT
@click.option("--dataset", default=None, help="Only ratings from this Argilla dataset (default: all).")
@click.option("--rule", "rules", multiple=True, type=click.Choice(RULES),
              help=f"Pair rules to apply (repeat; default: {', '.join(_RULES.rules)}). See docs/reward-models.md.")
@click.option("--weights", default=None, callback=lambda _c, _p, v: _weights(v), help='Rule (a) score as attribute weights, e.g. "helpfulness=0.7,correctness=0.3".')
@click.option("--tie-threshold", type=click.FloatRange(0), default=_RULES.tie_threshold, show_default=True, help="Rule (a): drop closer pairs.")
@click.option("--include-disagreement", is_flag=True, help="Keep records flagged for annotator disagreement.")
@TEST_SIZE
@SPLIT_SEED
@click.option("--mix", multiple=True, help="Also include TRL-format preference data: a file, folder or hub id (repeat).")
@click.option("--push-to-hub", default=None, metavar="REPO", help="Also push the export to this Hugging Face repo.")
@click.option("--include-judge", is_flag=True,
              help="Also export pairs from the LLM judge's ratings (RLAIF), each marked source=judge (docs/judge.md).")
@OVERWRITE
@home_option
@json_option
@reports
def preferences(out, fmt, dataset, rules, weights, tie_threshold, include_disagreement, test_size, seed, mix,
                push_to_hub, include_judge, overwrite, home, as_json):
    """Preference pairs in TRL's conversational columns (prompt, chosen, rejected, margin) plus provenance."""
    from curation.store import Store
    from loops.export import PairRules, export_preferences

    pair_rules = PairRules(tie_threshold=tie_threshold, weights=weights, include_disagreement=include_disagreement,
                           test_size=test_size, seed=seed, **({"rules": tuple(rules)} if rules else {}))
    result = export_preferences(Store.open(home), out, fmt=fmt, rules=pair_rules, dataset=dataset, mix=list(mix),
                                push_to_hub=push_to_hub, overwrite=overwrite, include_judge=include_judge)
    return result, (f"wrote {result['pairs']:,} pairs ({result['train']:,} train, {result['test']:,} test) to "
                    f"{result['out']}{_simulated(result, 'pairs')}")


def _weights(text: str | None) -> dict[str, float] | None:
    try:
        return {k.strip(): float(v) for k, v in (w.split("=") for w in text.split(","))} if text else None
    except ValueError:
        raise click.BadParameter(f"{text!r} is not NAME=NUMBER,…; e.g. helpfulness=0.7,correctness=0.3") from None


@click.command("ratings")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@FORMAT
@click.option("--dataset", default=None, help="Only ratings from this Argilla dataset (default: all).")
@click.option("--include-disagreement", is_flag=True, help="Keep records flagged for annotator disagreement.")
@TEST_SIZE
@SPLIT_SEED
@OVERWRITE
@home_option
@json_option
@reports
def ratings(out, fmt, dataset, include_disagreement, test_size, seed, overwrite, home, as_json):
    """Rating regression data: context, response and the five HelpSteer2 attributes (SteerLM-style)."""
    from curation.store import Store
    from loops.export import export_ratings

    result = export_ratings(Store.open(home), out, fmt=fmt, dataset=dataset, include_disagreement=include_disagreement,
                            test_size=test_size, seed=seed, overwrite=overwrite)
    return result, (f"wrote {result['rows']:,} rated responses ({result['train']:,} train, {result['test']:,} test) to "
                    f"{result['out']}{_simulated(result, 'rows')}")


def _simulated(result: dict, what: str) -> str:
    n = result["simulated"]
    return (f"\n{n:,} of the {result[what]:,} {what} come from simulated annotators' ratings, not people's "
            "(column `simulated`)") if n else ""


COMMANDS = [preferences, ratings]
