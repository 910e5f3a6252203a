"""Failure signals: small named detectors over each conversation, combined into a `failure_score`.

    from curation.signals import score_failures
    score_failures(store)                                  # the default detectors and weights
    score_failures(store, weights={"apology": 0.0})         # switch one off
    score_failures(store, detectors=[*default_detectors(), MyDetector()])
"""
from curation.signals.base import ConversationView, Detector, Signal
from curation.signals.score import DEFAULT_THRESHOLD, default_detectors, load_scores, score_conversation, score_failures

__all__ = ["ConversationView", "DEFAULT_THRESHOLD", "Detector", "Signal", "default_detectors", "load_scores",
           "score_conversation", "score_failures"]
