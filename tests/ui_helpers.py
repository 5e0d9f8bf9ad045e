"""The web UI for tests: ``tvc ui`` as a real subprocess on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx

from server_helpers import _die_with_parent, free_port


def copy_registry(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


@contextmanager
def running_ui(data: Path, author: str = "ui-user"):
    """``tvc -R DATA ui --port P`` once it answers: ``(url, process)``; killed after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvc", "-R", str(data), "ui", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_parent,
        env={**os.environ, "TVC_DAEMON": "0", "TVC_AUTHOR": author},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # until it answers or exits (bounded: 600 tries of <= 0.1 s)
            if proc.poll() is not None:
                raise RuntimeError(f"tvc ui exited: {proc.stderr.read().decode()}")
            try:
                httpx.get(url + "/ui/static/tvc.css", timeout=0.1)
                break
            except httpx.HTTPError:
                try:
                    proc.wait(0.1)
                except subprocess.TimeoutExpired:
                    pass
        else:
            raise RuntimeError("tvc ui did not answer")
        yield url, proc
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
