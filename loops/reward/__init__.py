"""Reward models: train (`trainer`), evaluate pairwise accuracy (`evaluate`), score the store (`score`)."""
from loops.reward.evaluate import evaluate
from loops.reward.model import RewardModel
from loops.reward.score import score
from loops.reward.trainer import TrainConfig, train

__all__ = ["RewardModel", "TrainConfig", "evaluate", "score", "train"]
