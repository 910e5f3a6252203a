"""Bearer tokens of `curate collect` (created by migration 0009): only the sha256 of a token is stored."""
from sqlalchemy import Column, String, Table, Text

from curation.store.tables import metadata

collect_tokens = Table(
    "collect_tokens",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Text, nullable=False),
    Column("revoked_at", Text),
)
