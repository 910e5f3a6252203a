"""Curate's in-process search engine that argilla-server uses in place of Elasticsearch.

It implements every abstract method of `argilla_server.search_engine.base.SearchEngine` with the semantics of
the Elasticsearch engine in `search_engine/commons.py`: per-user response status, terms/range filters on
metadata, suggestions, responses and record properties, sorting (missing values last), simple_query_string text
search (chat fields too), cosine similarity over vectors (most and least similar, excluding the record itself),
progress counts and metadata metrics. One difference is deliberate: when a user asks for their queue with no sort,
records come in routing-priority order (highest `failure_score` first) instead of Elasticsearch's per-user shuffle.

Indexes live in memory, shared by every engine instance of the process, and are rebuilt from argilla-server's own
database the first time an engine is created, so a restart loses nothing.

Importing this package registers the engine (argilla-server must be importable: `annotations.server.jobs.install()`
runs first, see `annotations.server.app`). Its modules:

- `documents`: what the index keeps of a record (text, metadata, suggestions, responses, vectors) and date bounds;
- `rebuild`: the process-wide indexes and their rebuild from the database at start;
- `filters`: filter and sort evaluation (numpy masks and lexsort keys), and the unsorted queue's order;
- `adapter`: the `SearchEngine` subclass argilla-server calls.
"""
from __future__ import annotations

from annotations.server.search.adapter import ENGINE_NAME, CurateSearchEngine
from annotations.server.search.documents import document, suggestion_document
from annotations.server.search.rebuild import dataset_index

__all__ = ["ENGINE_NAME", "CurateSearchEngine", "dataset_index", "document", "suggestion_document"]
