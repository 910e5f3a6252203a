"""Embed conversations: a view picks the text, an `Embedder` turns it into a vector, the store keeps one per space.

    from curation.embed import embed, load_vectors
    embed(store)                       # incremental: only conversations without a vector in this space
    ids, X = load_vectors(store)       # float32, L2-normalised rows, newest space
"""
from curation.embed.embedder import DEFAULT_MODEL, EmbedError, Embedder
from curation.embed.run import EmbedSettings, embed
from curation.embed.vectors import NoVectorsError, load_vectors, spaces
from curation.embed.views import VIEWS, get_view, last_turn, request, thread

__all__ = [
    "DEFAULT_MODEL", "EmbedError", "EmbedSettings", "Embedder", "NoVectorsError", "VIEWS",
    "embed", "get_view", "last_turn", "load_vectors", "request", "spaces", "thread",
]
