"""A real ``tvc server`` for the Hugging Face client tests, and the clients pointed at it.

The clients read ``HF_ENDPOINT`` once, when ``huggingface_hub`` is imported: the session's
server is started before that import and the variable set then (if another test imported the
library first, its endpoint constants are set to the same URL: configuration, not a mock).
Each test gets its own client cache (``cache_dir``), so nothing is served from another test's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import tvc
from hf_helpers import MODEL, PRIVATE
from server_helpers import running_server, token

from repo_helpers import make_model_dir


def point_clients_at(url: str) -> None:
    os.environ["HF_ENDPOINT"] = url
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_XET"] = "1"  # the server speaks Git LFS, not Xet
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.pop("HF_HUB_OFFLINE", None)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        constants.ENDPOINT = url
        constants.HUGGINGFACE_CO_URL_TEMPLATE = url + "/{repo_id}/resolve/{revision}/{filename}"
        constants.HF_HUB_DISABLE_XET = True


def commit_versions(reg, root: Path) -> dict[str, str]:
    """acme/tiny: v1, v2 on main (tag release-3 on v2), v3 on branch exp; production → v1."""
    shas = {}
    for n, seed in ((1, 1), (2, 2)):
        out = root / f"out{n}"
        make_model_dir(out, seed=seed, n_layers=2, width=16)
        (out / "sub").mkdir()
        (out / "sub" / "notes.txt").write_text(f"notes of v{n}\n")
        (out / "dir with space").mkdir()
        (out / "dir with space" / "ü#file+1.txt").write_text("odd name\n")
        v = reg.commit(MODEL, [out], f"v{n}", detect_code=False)
        shas[f"v{n}"] = v.id[:40]
    reg.tag(MODEL, "release-3", "v2")
    out = root / "out3"
    make_model_dir(out, seed=3, n_layers=2, width=16)
    v = reg.commit(MODEL, [out], "exp", branch="exp", detect_code=False)
    shas["v3"] = v.id[:40]
    reg.set_alias(MODEL, "production", "v1")
    make_model_dir(root / "outp", seed=9, n_layers=1, width=8)
    reg.commit(PRIVATE, [root / "outp"], "private", detect_code=False)
    return shas


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """``{"url", "tokens", "shas", "data"}`` of a server holding acme/tiny and secret/model."""
    root = tmp_path_factory.mktemp("hf")
    os.environ.setdefault("TVC_AUTHOR", "tester")
    reg = tvc.Registry.init(root / "reg")
    shas = commit_versions(reg, root)
    reg.close()
    toks = {
        "admin": token(root / "reg", "admin", "admin"),
        "read": token(root / "reg", "reader", "read"),
        "acme": token(root / "reg", "acme-only", "write", models=["acme/*"]),
    }
    with running_server(root / "reg") as (url, _proc):
        point_clients_at(url)
        yield {"url": url, "tokens": toks, "shas": shas, "data": root / "reg", "root": root}


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf-cache")
