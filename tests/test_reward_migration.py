"""Migration 0005 (reward_models, promotions, preference_exports): up from 0004, down and up again."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from curation.store import Store, _alembic_config


def _tables(store: Store) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


def _run(store: Store, fn, revision: str) -> None:
    with store.engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        fn(cfg, revision)


def test_0005_upgrades_from_0004_and_downgrades(home):
    store = Store.open(home, migrate=False)
    _run(store, command.upgrade, "0004")
    assert "ratings" in _tables(store) and "reward_models" not in _tables(store)
    _run(store, command.upgrade, "0005")
    assert {"reward_models", "promotions", "preference_exports"} <= _tables(store)
    _run(store, command.downgrade, "0004")
    assert not {"reward_models", "promotions", "preference_exports"} & _tables(store)
    store.migrate()
    from loops.registry import list_models, register

    register(store, home, base="b", loss="bt", data_version="v", metrics={"x": 1})
    assert list_models(store)[0]["metrics"] == {"x": 1}
    store.dispose()
