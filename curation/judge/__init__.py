"""The LLM judge: `curate judge` rates conversations HelpSteer2-style through OpenAI-compatible endpoints.

Its ratings are evidence, not human labels (see `curation.judge.store`). Read them with `latest_judgements`.
"""
from curation.judge.store import latest_judgements
from curation.store.judge_tables import ATTRIBUTES

__all__ = ["ATTRIBUTES", "latest_judgements"]
