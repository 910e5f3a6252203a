"""Names and defaults that several modules share are defined once: the CLI, the loop file and the library agree."""
from __future__ import annotations

import dataclasses
import inspect

import click

from annotations.tables import rating_responses, ratings
from annotations.template import ATTRIBUTES, template
from curation.cli.export_learn import preferences
from curation.cli.export_learn import ratings as ratings_command
from curation.cli.reward import train
from loops.export import export_ratings
from loops.export_config import RULES, PairRules
from loops.loop.config import Export, Train
from loops.reward_config import LOSSES, TrainConfig


def _option(command: click.Command, name: str) -> click.Parameter:
    return next(p for p in command.params if p.name == name)


def _metadata(cls: type, name: str) -> dict:
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata


def test_export_defaults_are_the_pair_rules():
    rules = PairRules()
    assert rules.test_size == 0.1  # documented in docs/cli.md
    for command in (preferences, ratings_command):
        assert _option(command, "test_size").default == rules.test_size
        assert _option(command, "seed").default == rules.seed
    assert _option(preferences, "tie_threshold").default == rules.tie_threshold
    assert list(_option(preferences, "rules").type.choices) == list(RULES)
    loop = Export()
    assert (loop.test_size, loop.seed, loop.tie_threshold, loop.include_disagreement, loop.rules) == (
        rules.test_size, rules.seed, rules.tie_threshold, rules.include_disagreement, list(rules.rules))
    defaults = inspect.signature(export_ratings).parameters
    assert (defaults["test_size"].default, defaults["seed"].default) == (rules.test_size, rules.seed)


def test_loss_names_are_defined_once():
    assert list(_option(train, "loss").type.choices) == list(LOSSES)
    assert _option(train, "loss").default == TrainConfig.loss == Train().loss
    assert _metadata(Train, "loss")["choices"] == LOSSES
    assert _metadata(TrainConfig, "loss")["help"] == " | ".join(LOSSES)


def test_attributes_are_the_templates_questions_and_the_tables_columns():
    questions = [q["name"] for q in template()["questions"] if q["settings"]["type"] == "rating"]
    assert tuple(questions) == ATTRIBUTES
    for table in (rating_responses, ratings):
        assert set(ATTRIBUTES) <= set(table.c.keys())
