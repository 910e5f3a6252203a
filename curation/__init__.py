"""Curate's first half: find what to fix (store, ingest, logging, embed, cluster, failure signals, reports)."""
from curation.logger import ConversationLogger, log_conversation, log_feedback

__all__ = ["ConversationLogger", "log_conversation", "log_feedback"]
