"""The migrations build exactly the schema that the `*_tables.py` modules declare, on SQLite and on PostgreSQL.

Alembic's own comparison (the one `alembic revision --autogenerate` uses) reports every table, column, type,
nullability, index, unique and foreign-key constraint that differs; primary keys, which it leaves out, are compared
here too. A change to a table module without its migration, or the reverse, fails here.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

REPO = Path(__file__).resolve().parent.parent


def declared() -> sa.MetaData:
    """The one MetaData, after importing every `*tables.py` module of the three packages."""
    for package in ("curation", "annotations", "loops"):
        for path in sorted((REPO / package).rglob("*tables.py")):
            importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
    from curation.store.tables import metadata

    return metadata


def differences(conn: sa.Connection, metadata: sa.MetaData) -> list:
    found = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    inspector = sa.inspect(conn)
    for name, table in metadata.tables.items():
        if inspector.has_table(name):
            migrated = inspector.get_pk_constraint(name)["constrained_columns"]
            if migrated != [c.name for c in table.primary_key.columns]:
                found.append(("primary_key", name, migrated, [c.name for c in table.primary_key.columns]))
    return found


def test_upgrade_head_gives_the_declared_tables(store):
    metadata = declared()
    assert {"conversations", "embeddings", "clusters", "ratings", "reward_models", "loop_runs"} <= set(metadata.tables)
    with store.connect() as conn:
        assert differences(conn, metadata) == []


def test_the_comparison_sees_a_difference(store):
    changed = sa.MetaData()
    for table in declared().tables.values():
        table.to_metadata(changed)
    sa.Table("ghost", changed, sa.Column("id", sa.Integer, primary_key=True))
    changed.tables["ratings"].append_column(sa.Column("extra", sa.Text))
    with store.connect() as conn:
        kinds = {d[0] for d in differences(conn, changed)}
    assert {"add_table", "add_column"} <= kinds
