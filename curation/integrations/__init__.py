"""Logging from where applications already are: `curation.integrations.openai.wrap(client)` logs every chat
completion of an `openai` client through `ConversationLogger` (extra `curate[openai]`)."""
