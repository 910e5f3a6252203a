"""Tables of the annotation stage: what was pushed, every raw response, and the per-record consensus.

Created by migration 0004. A record id is derived from the conversation id(s) (`annotations.record_builder.record_id`), and the
same id is the Argilla record's `external_id`, so a re-push or a resumed push adds nothing. A conversation is routed
to one dataset at most: annotation budget is not spent twice on it.
"""
from sqlalchemy import Column, Float, Index, Integer, String, Table, Text

from annotations.template import ATTRIBUTES
from curation.store.tables import metadata

annotation_records = Table(
    "annotation_records",
    metadata,
    Column("record_id", String(420), primary_key=True),
    Column("dataset", String(200), nullable=False),
    Column("conversation_id", String(200), nullable=False),
    Column("conversation_id_b", String(200)),  # second response to the same context (preference record)
    Column("priority", Float),
    Column("strategy", String(32)),  # which part of the routing strategy chose it: failure, explore, novel, ids
    Column("pushed_at", Text, nullable=False),
    Column("run_id", String(36)),
    Index("ix_annotation_records_dataset", "dataset"),
    Index("ix_annotation_records_conversation", "conversation_id"),
)

rating_responses = Table(
    "rating_responses",
    metadata,
    Column("id", String(640), primary_key=True),  # "<record_id>:<annotator>"
    Column("dataset", String(200), nullable=False),
    Column("record_id", String(420), nullable=False),
    Column("conversation_id", String(200), nullable=False),
    Column("conversation_id_b", String(200)),
    Column("annotator", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # submitted, discarded, draft
    *(Column(name, Float) for name in ATTRIBUTES),  # the five HelpSteer2 attributes, 0–4
    Column("preference", Integer),  # -3..3, negative = response A better: conversation_id's, or conversation_id_b's
    # when the record was shown swapped (annotations.order; rewrites are of the response shown as A too)
    Column("justification", Text),
    Column("rewrite", Text),
    Column("updated_at", Text),  # the server's time of the response
    Column("pulled_at", Text, nullable=False),
    Column("run_id", String(36)),
    Index("ix_rating_responses_record", "record_id"),
    Index("ix_rating_responses_dataset", "dataset", "updated_at"),
)

ratings = Table(
    "ratings",
    metadata,
    Column("record_id", String(420), primary_key=True),
    Column("dataset", String(200), nullable=False),
    Column("conversation_id", String(200), nullable=False),
    Column("conversation_id_b", String(200)),
    Column("n_annotators", Integer, nullable=False),
    *(Column(name, Float) for name in ATTRIBUTES),  # the five HelpSteer2 attributes, 0–4
    Column("preference", Float),
    Column("disagreement", Integer, nullable=False, default=0),  # 1 = spread > 2 on some attribute (≥ 3 annotators)
    Column("annotators", Text),  # JSON list of annotator names
    Column("run_id", String(36)),
    Column("updated_at", Text, nullable=False),
    Index("ix_ratings_dataset", "dataset"),
)

# Pull's high-water mark per dataset: the newest response time seen, so the next pull asks only for newer ones.
annotation_sync = Table(
    "annotation_sync",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("responses_since", Text),
    Column("pulled_at", Text),
    Column("run_id", String(36)),
)
