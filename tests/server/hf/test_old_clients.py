"""The previous generation of the clients (huggingface_hub 0.3x, transformers 4.x) against the
same server. ``make test`` installs one generation; this runs when ``TVC_HF_OLD_CLIENTS`` names
a directory holding the other (``pip install --target DIR --no-deps huggingface_hub==0.36.2
transformers==4.57.6 tokenizers==0.22.1``) and is skipped otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tvc

OLD = os.environ.get("TVC_HF_OLD_CLIENTS")


@pytest.mark.skipif(not OLD, reason="TVC_HF_OLD_CLIENTS not set")
def test_old_clients_read_and_publish(hub):
    reg = tvc.Registry(hub["data"])
    try:
        v1 = reg.resolve("acme/tiny@v1")
        files = {fe.path: hashlib.sha256(reg.read(v1, fe.path)).hexdigest() for fe in v1.files}
    finally:
        reg.close()
    args = {
        "url": hub["url"],
        "token": hub["tokens"]["acme"],
        "shas": hub["shas"],
        "files_v1": files,
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([OLD, os.environ.get("PYTHONPATH", "")]),
        "HF_ENDPOINT": hub["url"],
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(hub["root"] / "old-home"),
    }
    script = Path(__file__).with_name("old_clients.py")
    out = subprocess.run(
        [sys.executable, str(script), json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("OK 8"), out.stdout
