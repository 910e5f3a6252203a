"""Tables of the embed stage: one row per embedding space, one vector per conversation per space.

A *space* is model + view + backend: vectors from different spaces are never compared, so each has its own rows and
`curate embed` with a new model, view or backend embeds everything once more without touching the old vectors.
Vectors are raw little-endian float32 bytes (`numpy.ndarray.tobytes()`), L2-normalised, so that
`curation.embed.load_vectors` reads only `(conversation_id, vector)` and stacks them with one `numpy.frombuffer`.
"""
from sqlalchemy import Column, Index, Integer, LargeBinary, String, Table, Text

from curation.store.tables import metadata

embedding_spaces = Table(
    "embedding_spaces",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(400), nullable=False, unique=True),  # "<model>|<view>|<backend>"
    Column("model", Text, nullable=False),  # the name or path the user gave
    Column("view", String(64), nullable=False),
    Column("backend", String(32), nullable=False),  # torch, onnx-int8, openvino-int8 …
    Column("dim", Integer, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),  # last run that added vectors: load_vectors(space=None) picks the newest
    Column("run_id", String(36)),
)

embeddings = Table(
    "embeddings",
    metadata,
    Column("space_id", Integer, primary_key=True),
    Column("conversation_id", String(200), primary_key=True),
    Column("vector", LargeBinary, nullable=False),  # float32 × dim
    Column("text_hash", String(32), nullable=False),  # of the embedded view text: identical texts reuse one vector
    Column("run_id", String(36)),
    Column("embedded_at", Text, nullable=False),
    Index("ix_embeddings_text_hash", "space_id", "text_hash"),
)
