"""The failure model learned from ratings (docs/concepts-failures.md, "The learned failure model")."""
from loops.failures.fit import DEFAULT_RULE, FailureModelError, explain, fit_failure_model, parse_rule, refresh
from loops.failures.model import FailureModel

__all__ = ["DEFAULT_RULE", "FailureModel", "FailureModelError", "explain", "fit_failure_model", "parse_rule", "refresh"]
