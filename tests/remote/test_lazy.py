"""``clone --lazy``: metadata now, chunks when read — reading one tensor moves only its chunks."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import tvc
from server_helpers import running_server, token
from tvc.remote import open_transport, sync
from tvc.store import index

from repo_helpers import make_model_dir


@pytest.fixture(params=["path", "http"])
def connect(request):
    with contextlib.ExitStack() as stack:

        def make(path: Path):
            if request.param == "path":
                return str(path), None
            secret = token(path, "reader", "read")
            url, _proc = stack.enter_context(running_server(path))
            return url, secret

        yield make


def stored(reg) -> int:
    with reg.meta.read() as conn:
        return conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(index.chunks.c.stored_len), 0)).where(
                index.chunks.c.kind == 0
            )
        ).scalar()


def test_a_lazy_clone_fetches_only_what_is_read(tmp_path, connect, monkeypatch):
    src = tvc.Registry.init(tmp_path / "src")
    tensors = {}
    for i in range(2):
        tensors = make_model_dir(tmp_path / "out", seed=1, n_layers=6, width=256, changed=(i,))
        src.commit("m", [tmp_path / "out"], f"v{i + 1}", detect_code=False)
    where, secret = connect(tmp_path / "src")
    if secret:
        monkeypatch.setenv("TVC_TOKEN", secret)
    c = tvc.Registry.clone(where, tmp_path / "c", lazy=True)
    assert [v.id for v in c.log("m")] == [v.id for v in src.log("m")]
    assert stored(c) == 0  # no chunk yet
    got = c.open("m@v2").tensor("layers.3.weight")
    np.testing.assert_array_equal(got, tensors["layers.3.weight"])
    # Exactly that tensor's chunks (one 256 KiB piece) travelled.
    m = src.manifest(src.resolve("m@v2").files[-1].manifest_id)
    t = m.tensor("layers.3.weight")
    a, b = m.chunk_range(t.offset, t.length)
    want = {cid for cid, _n in m.chunks[a:b]}
    rows = src.store.infos(want, with_bases=True)
    assert stored(c) == sum(r.stored_len for r in rows.values())
    # diff reads the changed tensors of both sides (and only what differs).
    d = c.diff("m@v1", "m@v2")
    assert d.to_json() == src.diff("m@v1", "m@v2").to_json()
    # A file read, a checkout and fill bring the rest, every byte verified.
    assert c.read("m@v1", "config.json") == src.read("m@v1", "config.json")
    c.checkout("m@v2", tmp_path / "co")
    assert (tmp_path / "co" / "model.safetensors").read_bytes() == src.read(
        "m@v2", "model.safetensors"
    )
    c.fill("m@v1")
    assert c.fsck(read_data=True)["ok"]
    with open_transport(where, secret) as remote:
        assert sync.pull(c, remote).bytes_sent == 0


def test_a_lazy_clone_commits_and_pushes_only_its_new_chunks(tmp_path, connect, monkeypatch):
    """A commit in a lazy clone deduplicates against what the clone holds (a server answers
    404 for the new chunks it has never seen: they are not asked of it), and its push sends
    only what the remote lacks."""
    src = tvc.Registry.init(tmp_path / "src")
    make_model_dir(tmp_path / "out", seed=2, n_layers=6, width=256)
    src.commit("m", [tmp_path / "out"], "v1", detect_code=False)
    where, secret = connect(tmp_path / "src")
    if secret:  # (connect made a read token)
        monkeypatch.setenv("TVC_TOKEN", token(tmp_path / "src", "writer", "write"))
    c = tvc.Registry.clone(where, tmp_path / "c", lazy=True)
    make_model_dir(tmp_path / "out", seed=2, n_layers=6, width=256, changed=(4,))
    v2 = c.commit("m", [tmp_path / "out"], "v2", detect_code=False)
    with open_transport(where, None) as remote:
        t = sync.push(c, remote, ["m"])
    assert t.versions == 1 and t.objects_skipped > 0
    logical = (tmp_path / "out" / "model.safetensors").stat().st_size
    assert t.bytes_sent < logical / 3  # the changed tensor, not the model
    assert src.resolve("m").id == v2.id
    assert (
        src.read("m@v2", "model.safetensors")
        == (tmp_path / "out" / "model.safetensors").read_bytes()
    )
