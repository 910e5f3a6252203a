"""`PairRules`: how ratings become preference pairs, and the export defaults (re-exported as `loops.export.PairRules`).

It lives outside `loops.export`, whose import loads torch, so that `curate export --help` and loop files read these
defaults without that cost; the CLI options and the loop file's `[export]` section take their defaults from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

RULES = ("ratings", "preference", "rewrite", "feedback")  # see `loops.export` for what each rule pairs


@dataclass
class PairRules:
    """How ratings become pairs; every field is recorded in the manifest."""

    rules: tuple[str, ...] = field(default=("ratings", "preference", "rewrite"),
                                   metadata={"help": "Which of ratings (a), preference (b), rewrite (c), feedback (d)."})
    weights: dict[str, float] | None = field(default=None, metadata={
        "help": "Rule (a) score = Σ weight·attribute; None = helpfulness alone."})
    tie_threshold: float = field(default=0.5, metadata={"help": "Rule (a): drop pairs whose scores differ by less."})
    preference_threshold: float = field(default=0.5, metadata={
        "help": "Rule (b): drop records whose mean |strength| is below this (0 = no preference)."})
    rewrite_margin: float = field(default=2.0, metadata={"help": "Rule (c): margin of rewrite ≻ original."})
    feedback_margin: float = field(default=1.0, metadata={"help": "Rule (d): margin of thumbs-up ≻ thumbs-down."})
    include_disagreement: bool = field(default=False, metadata={"help": "Keep records flagged for disagreement."})
    test_size: float = field(default=0.1, metadata={"help": "Fraction of contexts in the test split."})
    seed: int = field(default=0, metadata={"help": "Seeds the split."})
