"""A registry made before the registry tables (schema 0001) upgrades in place to the head."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from tvc.repo import db


def test_upgrade_from_0001_keeps_data(tmp_path):
    engine = db.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(db._MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO models (id, name, created) VALUES (1, 'm', 0)"))
        conn.execute(
            sa.text(
                "INSERT INTO versions (id, model_id, number, message, author, created, params,"
                " metrics, datasets, state, size) VALUES ('a', 1, 1, '', 'x', 0, '{}',"
                " '{\"acc\": 0.5}', '{}', 'created', 0)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO ref_events (model_id, kind, name, old_version, new_version, actor,"
                " at, reason, forced) VALUES (1, 'tag', 't', NULL, 'a', 'x', 0, '', 0)"
            )
        )
    assert db.current_revision(engine) == "0001"
    db.migrate(engine)
    assert db.current_revision(engine) == db.SCHEMA_HEAD
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT metrics, extra_metrics FROM versions")).one()
        assert row == ('{"acc": 0.5}', None)
        assert conn.execute(sa.text("SELECT rollback FROM ref_events")).scalar() == 0
        tables = set(sa.inspect(conn).get_table_names())
        assert {"state_events", "metric_events", "journal", "uploads", "leases"} <= tables
        # 0003: numbering goes on after the versions there are
        assert conn.execute(sa.text("SELECT last_number FROM models")).scalar() == 1
    engine.dispose()
