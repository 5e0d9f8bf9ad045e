"""push / pull / clone between registries, over both transports: another registry directory
and a real ``tvc server`` on loopback. Faults are injected by wrapping a transport."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

import tvc
from server_helpers import running_server, token
from tvc.errors import ConflictError, IntegrityError
from tvc.remote import objects, open_transport, record, sync
from tvc.remote.transport import Transport
from tvc.store import index

from repo_helpers import make_model_dir


@pytest.fixture(params=["path", "http"])
def connect(request):
    """``connect(registry_dir) -> (where, token)``: a path, or a server started on it."""
    with contextlib.ExitStack() as stack:

        def make(path: Path):
            if request.param == "path":
                return str(path), None
            secret = token(path, "pusher")
            url, _proc = stack.enter_context(running_server(path))
            return url, secret

        yield make


def chain(tmp_path: Path, n: int = 3, name: str = "a") -> tvc.Registry:
    reg = tvc.Registry.init(tmp_path / name)
    for i in range(n):
        make_model_dir(tmp_path / "out", seed=1, changed=tuple(range(i)))
        reg.commit("m", [tmp_path / "out"], f"step {i}", detect_code=False)
    return reg


def pack_bytes(reg) -> int:
    with reg.meta.read() as conn:
        return conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(index.packs.c.size), 0))
        ).scalar()


def same_versions(a, b, model="m"):
    va, vb = a.log(model), b.log(model)
    assert [(v.id, v.number) for v in va] == [(v.id, v.number) for v in vb]
    for v in va:
        for fe in v.files if v.files else a.version(v.id).files:
            assert a.read(f"{model}@v{v.number}", fe.path) == b.read(
                f"{model}@v{v.number}", fe.path
            )


def test_push_then_clone_every_version_bit_exact(tmp_path, connect):
    a = chain(tmp_path)
    srv = tvc.Registry.init(tmp_path / "srv")
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        t = sync.push(a, remote, ["m"])
    assert t.versions == 3 and t.branches[0]["status"] == "updated"
    c = tvc.Registry.clone(where, tmp_path / "c", token=secret)
    same_versions(a, srv)
    same_versions(a, c)
    for reg in (a, srv, c):
        assert reg.fsck(read_data=True)["ok"]
    assert c.refs_of("m") == srv.refs_of("m")
    # A second push and a pull have nothing to send.
    with open_transport(where, secret) as remote:
        assert sync.push(a, remote, ["m"]).bytes_sent == 0
        assert sync.pull(c, remote).bytes_sent == 0


def test_only_missing_objects_travel(tmp_path, connect):
    a = chain(tmp_path)
    srv = tvc.Registry.init(tmp_path / "srv")
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        sync.push(a, remote, ["m"])
        make_model_dir(tmp_path / "out", seed=1, changed=(0, 1, 2, 3))  # a fine-tune
        a.commit("m", [tmp_path / "out"], "fine-tune", detect_code=False)
        before = pack_bytes(srv)
        t = sync.push(a, remote, ["m"])
    added = pack_bytes(srv) - before
    assert t.versions == 1 and t.objects_skipped > 0
    assert 0 < t.bytes_sent <= 1.1 * added, (t.bytes_sent, added)


def test_non_fast_forward_is_refused_and_force_overwrites(tmp_path, connect):
    a = chain(tmp_path, 1)
    srv = tvc.Registry.init(tmp_path / "srv")
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        sync.push(a, remote, ["m"])
        b = tvc.Registry.clone(where, tmp_path / "b", token=secret)
        make_model_dir(tmp_path / "out", seed=5)
        b.commit("m", [tmp_path / "out"], "from b", detect_code=False)
        sync.push(b, remote, ["m"])
        make_model_dir(tmp_path / "out", seed=6)
        mine = a.commit("m", [tmp_path / "out"], "from a", detect_code=False)
        theirs = srv.resolve("m@main").id
        with pytest.raises(ConflictError, match=r"pull.*--force"):
            sync.push(a, remote, ["m"])
        assert srv.resolve("m@main").id == theirs
        with pytest.raises(ConflictError, match="--force"):
            sync.pull(a, remote, ["m"])
        assert a.resolve("m@main").id == mine.id
        sync.push(a, remote, ["m"], force=True)
        assert srv.resolve("m@main").id == mine.id


def test_a_branch_that_moved_meanwhile_is_not_overwritten(tmp_path):
    """Two pushes that saw the same head: the receiver's compare-and-swap lets one win."""
    a = chain(tmp_path, 2)
    srv = tvc.Registry.init(tmp_path / "srv")
    with open_transport(str(tmp_path / "srv")) as remote:
        sync.push(a, remote, ["m@main"])
    v1, v2 = (v.id for v in reversed(a.log("m")))
    with pytest.raises(ConflictError, match="moved meanwhile"):
        record.record_versions(srv, "m", [], moves=[record.Move("main", v1, v1)], actor="late")
    assert srv.resolve("m@main").id == v2


class FailingAfter(Transport):
    """A transport that dies after ``n`` packs went through (a killed push), by wrapping."""

    def __init__(self, inner: Transport, n: int) -> None:
        self.inner, self.n, self.url = inner, n, inner.url

    def put_pack(self, name, path, lease):
        if self.n <= 0:
            raise KeyboardInterrupt("killed")
        self.n -= 1
        return self.inner.put_pack(name, path, lease)

    def drop_lease(self, lease):
        pass  # a killed process drops nothing: its lease stays until it expires

    def __getattribute__(self, attr):
        if attr in ("put_pack", "drop_lease", "inner", "n", "url") or attr.startswith("__"):
            return object.__getattribute__(self, attr)
        return getattr(object.__getattribute__(self, "inner"), attr)

    refs = recorded = version_infos = ancestry = object_rows = missing = history = None  # type: ignore
    get_pack = take_lease = record = None  # type: ignore


def test_a_killed_push_sends_only_what_is_missing_when_run_again(tmp_path, connect, monkeypatch):
    a = chain(tmp_path, 3)
    tvc.Registry.init(tmp_path / "srv")
    monkeypatch.setattr(objects, "PACK_LIMIT", 200_000)  # several packs
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        with pytest.raises(KeyboardInterrupt):
            sync.push(a, FailingAfter(remote, 2), ["m"])
        srv = tvc.Registry(tmp_path / "srv")
        assert srv.models() == []  # nothing recorded, the two packs kept
        kept = pack_bytes(srv)
        assert kept > 0
        with srv.meta.read() as conn:
            sent = [r[0] for r in conn.execute(sa.select(index.chunks.c.id))]
        srv.gc(grace=0)  # the push's lease is live: what it sent stays
        assert objects.missing(srv.engine, sent) == []
        t = sync.push(a, remote, ["m"])
    assert t.objects_skipped >= 2 and t.versions == 3
    full = sync.Transfer("push", "")
    rows = objects.with_bases(a.engine, record.objects_of(a, [v.id for v in a.log("m")]))
    full.objects_sent = len(rows)
    assert t.objects_sent + t.objects_skipped == full.objects_sent
    assert t.objects_sent < full.objects_sent
    same_versions(a, srv)
    assert srv.fsck(read_data=True)["ok"]


class FlippingServer(Transport):
    """A hostile remote: every pack it hands out has one byte flipped (``^ 0xFF``)."""

    def __init__(self, inner: Transport, where: str = "payload") -> None:
        self.inner, self.where, self.url = inner, where, inner.url

    def get_pack(self, ids, staging):
        name, path = self.inner.get_pack(ids, staging)
        data = bytearray(path.read_bytes())
        if self.where == "payload":
            data[len(data) // 2] ^= 0xFF
        elif self.where == "name":
            return "../" + name, path
        path.write_bytes(bytes(data))
        return name, path

    def __getattribute__(self, attr):
        if attr in ("get_pack", "inner", "where", "url") or attr.startswith("__"):
            return object.__getattribute__(self, attr)
        return getattr(object.__getattribute__(self, "inner"), attr)

    refs = recorded = version_infos = ancestry = object_rows = missing = history = None  # type: ignore
    put_pack = take_lease = drop_lease = record = None  # type: ignore


@pytest.mark.parametrize("where", ["payload", "name"])
def test_a_hostile_remote_is_refused_and_nothing_is_stored(tmp_path, where):
    a = chain(tmp_path, 2)
    b = tvc.Registry.init(tmp_path / "b")
    with open_transport(str(tmp_path / "a")) as remote, pytest.raises(IntegrityError):
        sync.pull(b, FlippingServer(remote, where))
    assert pack_bytes(b) == 0 and b.models() == []
    assert list((b.dir / "tmp").iterdir()) == []
    assert not list((b.dir / "objects").glob("packs/*/*"))
    del a


def test_the_receiver_verifies_every_entry(tmp_path):
    """A pack that hashes to its name but holds an entry whose bytes are not its id."""
    from tvc.store.packs import PackWriter

    b = tvc.Registry.init(tmp_path / "b")
    w = PackWriter(b.dir / "tmp")
    w.add("ab" * 32, b"not what that id names", 22, 0, None, 0, 22)
    name = w.finish()
    with pytest.raises(IntegrityError, match="does not match its id"):
        objects.receive_pack(b, w.path, name)
    assert pack_bytes(b) == 0 and not w.path.exists()
    # ... and one that asks for ids gets only those.
    a = chain(tmp_path, 1)
    some = record.objects_of(a, [a.resolve("m").id])
    name, path, _size = objects.write_pack(a, some, b.dir / "tmp")
    with pytest.raises(IntegrityError, match="not asked for"):
        objects.receive_pack(b, path, name, wanted=some[1:])
    assert pack_bytes(b) == 0


def test_two_pushes_to_one_branch_at_once_exactly_one_wins(tmp_path, connect):
    import threading

    a = chain(tmp_path, 1)
    tvc.Registry.init(tmp_path / "srv").close()
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        sync.push(a, remote, ["m"])
    clones = [tvc.Registry.clone(where, tmp_path / f"c{i}", token=secret) for i in range(2)]
    for i, c in enumerate(clones):
        make_model_dir(tmp_path / f"out{i}", seed=20 + i)
        c.commit("m", [tmp_path / f"out{i}"], f"clone {i}", detect_code=False)
    start = threading.Barrier(2)
    outcome: list[object] = [None, None]

    def go(i: int) -> None:
        with open_transport(where, secret) as remote:
            start.wait()
            try:
                outcome[i] = sync.push(clones[i], remote, ["m"])
            except ConflictError as exc:
                outcome[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    won = [i for i in range(2) if isinstance(outcome[i], sync.Transfer)]
    assert len(won) == 1, outcome
    lost = outcome[1 - won[0]]
    assert isinstance(lost, ConflictError) and re.search("moved meanwhile|pull", str(lost))
    srv = tvc.Registry(tmp_path / "srv")
    assert srv.resolve("m@main").id == clones[won[0]].resolve("m@main").id


def test_a_version_record_naming_a_path_outside_the_tree_is_refused(tmp_path):
    """A hostile sender can make any record hash to its id: the receiver checks its paths."""
    from tvc.errors import PathError
    from tvc.repo.version import FileEntry, version_record
    from tvc.store import hashing
    from tvc.store.packs import Kind, PackWriter

    a = chain(tmp_path, 1)
    v = a.resolve("m")
    b = tvc.Registry.init(tmp_path / "b")
    name, path, _size = objects.write_pack(a, record.objects_of(a, [v.id])[1:], b.dir / "tmp")
    objects.receive_pack(b, path, name)
    for evil in ("../evil", "/etc/evil"):
        fe = v.files[0]
        rec = version_record(
            model="m",
            parents=[],
            files=[FileEntry(evil, fe.size, fe.digest, fe.format, fe.manifest_id)],
            message="x",
            author="x",
            created=0.0,
            params={},
            metrics={},
            datasets={},
            code=None,
            base=None,
        )
        rid = hashing.digest(rec)
        w = PackWriter(b.dir / "tmp")
        w.add(rid, rec, len(rec), 0, None, 0, len(rec), Kind.VERSION)
        objects.receive_pack(b, w.path, w.finish())
        with pytest.raises(PathError):
            record.record_versions(b, "m", [rid], moves=[record.Move("main", None, rid)], actor="x")
    assert b.models() == []


def test_a_clone_of_nothing_makes_nothing(tmp_path):
    from tvc.errors import NotARegistryError

    with pytest.raises(NotARegistryError):
        tvc.Registry.clone(tmp_path / "nowhere", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_numbers_stay_put_and_differences_are_reported(tmp_path, connect):
    """Two clones commit before either pushes: each registry keeps its own vN, ids agree, and
    the summaries say which number a version has on the other side."""
    a = chain(tmp_path, 1)
    tvc.Registry.init(tmp_path / "srv").close()
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        sync.push(a, remote, ["m"])
    c1 = tvc.Registry.clone(where, tmp_path / "c1", token=secret)
    c2 = tvc.Registry.clone(where, tmp_path / "c2", token=secret)
    make_model_dir(tmp_path / "o1", seed=31)
    v1 = c1.commit("m", [tmp_path / "o1"], "c1", detect_code=False)
    c2.branch("m", "exp")
    make_model_dir(tmp_path / "o2", seed=32)
    v2 = c2.commit("m", [tmp_path / "o2"], "c2", branch="exp", detect_code=False)
    assert v1.number == v2.number == 2
    with open_transport(where, secret) as remote:
        assert sync.push(c1, remote, ["m"]).renumbered == []
        t = sync.push(c2, remote, ["m@exp"])
        assert t.renumbered == [{"model": "m", "id": v2.id, "here": 2, "there": 3}]
        t = sync.pull(c2, remote, ["m"])
        assert t.renumbered == [{"model": "m", "id": v1.id, "here": 3, "there": 2}]
    assert c2.resolve("m@v2").id == v2.id  # never changed meaning here
    assert c2.resolve(f"m@{v1.id[:12]}").number == 3
