"""A real ``tvc server`` for tests: a subprocess on a free 127.0.0.1 port, killed at teardown."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx

from tvc.server.tokens import TokenStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # in the child before exec: no orphan outlives the tests
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextmanager
def running_tvc(args: list[str], probe: str, **env: str):
    """``(url, process)`` of ``tvc ARGS --port P`` on a free port, once ``GET PROBE`` answers
    (or an error with its stderr if it exits first); SIGKILLed after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvc", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
        env={**os.environ, "TVC_DAEMON": "0", **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # until it answers or exits (bounded: 600 tries of <= 0.1 s)
            if proc.poll() is not None:
                raise RuntimeError(f"tvc {args[0]} exited: {proc.stderr.read().decode()}")
            try:
                httpx.get(url + probe, timeout=0.1)
                break
            except httpx.HTTPError:
                try:
                    proc.wait(0.1)
                except subprocess.TimeoutExpired:
                    pass
        else:
            raise RuntimeError(f"tvc {args[0]} did not answer")
        yield url, proc
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


@contextmanager
def running_server(data: Path, *extra: str):
    """``(url, process)`` of ``tvc server --data DATA [EXTRA...]`` once it answers."""
    with running_tvc(["server", "--data", str(data), *extra], "/openapi.json") as got:
        yield got


def token(data: Path, name: str, scope: str = "admin", **kw) -> str:
    from tvc.repo.repository import REGISTRY_DIR

    return TokenStore(Path(data) / REGISTRY_DIR).create(name, scope, **kw)
