"""Deletions travel: ``tvc rm`` of a version and a deleted branch reach the other side on push
and pull, by the rules of a local ``rm`` there (protected versions refuse a push unless
--force, and stay on a pull)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

import tvc
from server_helpers import running_server, token
from tvc.errors import ConflictError, UnknownRefError
from tvc.remote import open_transport, sync

from repo_helpers import make_model_dir


@pytest.fixture(params=["path", "http"])
def connect(request):
    with contextlib.ExitStack() as stack:

        def make(path: Path):
            if request.param == "path":
                return str(path), None
            secret = token(path, "pusher")
            url, _proc = stack.enter_context(running_server(path))
            return url, secret

        yield make


def three(tmp_path: Path) -> tvc.Registry:
    a = tvc.Registry.init(tmp_path / "a")
    for i in range(3):
        make_model_dir(tmp_path / "out", seed=1, n_layers=2, width=32, changed=tuple(range(i)))
        a.commit("m", [tmp_path / "out"], f"c{i + 1}", detect_code=False)
    a.branch("m", "exp", "v2")
    return a


def live(reg, model="m") -> list[str]:
    return [v.ref for v in reg.log(model)]


def test_a_deleted_version_and_branch_are_pushed(tmp_path, connect):
    a = three(tmp_path)
    tvc.Registry.init(tmp_path / "srv").close()
    where, secret = connect(tmp_path / "srv")
    srv = tvc.Registry(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        sync.push(a, remote, [])
        assert live(srv) == ["m@v3", "m@v2", "m@v1"]
        a.rm("m@v3", reason="leaked data")  # the head: main moves back to v2 here
        a.rm("m@v1")  # in the middle of the history: a tombstone
        a.delete_branch("m", "exp")
        t = sync.push(a, remote, ["m"])
    assert t.history["applied"] == 3
    assert live(srv) == ["m@v2"]
    assert srv.resolve("m@main").id == a.resolve("m@main").id
    with pytest.raises(UnknownRefError, match="deleted"):
        srv.resolve("m@v3")
    assert {r["name"] for r in srv.refs_of("m")} == {"main"}
    rm = [e for e in srv.audit("m") if e["kind"] == "rm"]
    assert len(rm) == 2
    assert {e["actor"] for e in rm} == {"tester" if secret is None else "pusher"}
    assert any("leaked data" in (e["reason"] or "") for e in rm)


def test_a_protected_version_refuses_the_push_unless_forced(tmp_path, connect):
    a = three(tmp_path)
    tvc.Registry.init(tmp_path / "srv").close()
    where, secret = connect(tmp_path / "srv")
    srv = tvc.Registry(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        sync.push(a, remote, [])
        srv.tag("m", "release", "v2")  # protected there, not here
        a.rm("m@v2")
        with pytest.raises(ConflictError, match="tag release"):
            sync.push(a, remote, ["m"])
        assert live(srv) == ["m@v3", "m@v2", "m@v1"]  # nothing of it applied
        sync.push(a, remote, ["m"], force=True)
    assert live(srv) == ["m@v3", "m@v1"]
    assert "release" not in {r["name"] for r in srv.refs_of("m")}


def test_deletions_are_pulled(tmp_path, connect):
    src = three(tmp_path)
    where, secret = connect(tmp_path / "a")
    c = tvc.Registry.clone(where, tmp_path / "c", token=secret)
    c.tag("m", "mine", "v1")  # protected here: that deletion is kept, and said so
    src.rm("m@v3")
    src.rm("m@v1")
    src.delete_branch("m", "exp")
    with open_transport(where, secret) as remote:
        t = sync.pull(c, remote, [])
    assert t.history == {"applied": 2, "skipped": 1}
    assert live(c) == ["m@v2", "m@v1"]
    assert c.resolve("m@main").id == src.resolve("m@main").id
    assert {r["name"] for r in c.refs_of("m")} == {"main", "mine"}


def test_a_branch_that_moved_on_is_not_deleted(tmp_path, connect):
    src = three(tmp_path)
    where, secret = connect(tmp_path / "a")
    c = tvc.Registry.clone(where, tmp_path / "c", token=secret)
    make_model_dir(tmp_path / "o2", seed=9, n_layers=2, width=32)
    c.commit("m", [tmp_path / "o2"], "on exp", branch="exp", detect_code=False)
    src.delete_branch("m", "exp")
    with open_transport(where, secret) as remote:
        t = sync.pull(c, remote, [])
    assert t.history["skipped"] == 1
    assert c.resolve("m@exp").message == "on exp"
