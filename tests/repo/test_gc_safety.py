"""gc beside writers and readers: the protocol of :mod:`tvc.repo.gc`, exercised.

gc and fsck run in loops while commits (that reuse and drop chunks) and checkouts run; every
acknowledged version must read back bit-exact and fsck must never report a false error.
Deleted pack files, damaged chunks and small packs are the other half: gc reclaims, a commit of
the same bytes heals, many small commits end up in few packs.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import tvc
from tvc.store.packs import Kind

from conftest_helpers import corrupt_one_pack
from repo_helpers import make_model_dir


def test_gc_and_fsck_in_loops_while_commits_and_checkouts_run(tmp_path):
    root = tmp_path / "reg"
    tvc.Registry.init(root).close()
    srcs = []
    for k in range(4):
        d = tmp_path / f"in{k}"
        make_model_dir(d, seed=1, n_layers=4, width=96, changed=(k,))
        srcs.append((d, (d / "model.safetensors").read_bytes()))
    acked: list[tuple[str, bytes]] = []
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with tvc.Registry(root) as reg:
            for i in range(24):
                d, data = srcs[i % len(srcs)]
                v = reg.commit("m", [d], f"c{i}")
                acked.append((v.id, data))
                if i % 3 == 2:  # drop some versions so gc has garbage to take
                    reg.rm(f"m@v{v.number - 1}")
                    acked.pop(-2)
        stop.set()

    def collector() -> None:
        with tvc.Registry(root) as reg:
            while not stop.is_set():
                reg.gc(grace=0)
                res = reg.fsck(repair=False)
                errors.extend(res["errors"])

    def reader() -> None:
        with tvc.Registry(root) as reg:
            n = 0
            while not stop.is_set():
                if acked:
                    vid, data = acked[-1]
                    try:
                        v = reg.version(vid)
                    except tvc.errors.UnknownRefError:
                        continue
                    if v.deleted is not None:
                        continue
                    try:
                        reg.checkout(v.ref, tmp_path / f"co{n % 2}", force=True)
                    except (tvc.errors.UnknownRefError, tvc.errors.IntegrityError):
                        if reg.version(vid).deleted is None:
                            raise  # a live version failed to read: the protocol is broken
                        continue  # deleted while we read it: no promise there
                    assert (tmp_path / f"co{n % 2}" / "model.safetensors").read_bytes() == data
                    n += 1

    failures: list[BaseException] = []

    def guarded(fn):
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # a thread's failure must fail the test
                failures.append(exc)
                stop.set()

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (writer, collector, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures
    assert not errors, errors[:5]
    with tvc.Registry(root) as reg:
        reg.gc(grace=0)
        for vid, data in acked:
            assert reg.read(reg.version(vid), "model.safetensors") == data
        assert reg.fsck(read_data=True)["ok"]


def test_committing_the_same_bytes_again_heals_a_lost_pack(registry, tmp_path):
    d = tmp_path / "in"
    make_model_dir(d, seed=3, n_layers=3, width=64)
    v1 = registry.commit("m", [d], "one")
    for pack in (registry.dir / "objects" / "packs").rglob("*.pack"):
        pack.unlink()  # lost: a disk, a bad restore
    res = registry.fsck()
    assert not res["ok"] and any("missing" in e for e in res["errors"])
    healed = registry.commit("m", [d], "the same bytes again")
    assert healed.new_bytes > 0  # the index's word was not taken: the bytes were stored anew
    data = (d / "model.safetensors").read_bytes()
    assert registry.read("m@v1", "model.safetensors") == data  # the old version is whole again
    assert registry.fsck(read_data=True)["ok"]
    assert v1.id == registry.resolve("m@v1").id


def test_fsck_marks_corrupt_chunks_and_a_new_commit_repairs_them(registry, tmp_path):
    d = tmp_path / "in"
    make_model_dir(d, seed=4, n_layers=3, width=128)
    registry.commit("m", [d], "one")
    corrupt_one_pack(registry.dir / "objects")
    res = registry.fsck(read_data=True)
    assert not res["ok"] and any("marked" in e for e in res["errors"])
    registry.commit("m", [d], "again")
    assert registry.read("m@v1", "model.safetensors") == (d / "model.safetensors").read_bytes()
    registry.gc(grace=0)  # the damaged copy is garbage now
    assert registry.fsck(read_data=True)["ok"]


def test_many_small_commits_end_in_few_packs(registry, tmp_path):
    f = tmp_path / "note.txt"
    for i in range(30):
        f.write_text(f"small change {i}\n")
        registry.commit("notes", [f], f"n{i}")
    packs = lambda: list((registry.dir / "objects" / "packs").rglob("*.pack"))  # noqa: E731
    assert len(packs()) >= 30
    registry.gc(grace=0)
    assert len(packs()) == 1
    for i in range(30):
        assert registry.read(f"notes@v{i + 1}", "note.txt") == f"small change {i}\n".encode()
    assert registry.fsck(read_data=True)["ok"]


def test_records_of_versions_and_manifests_are_in_the_packs(registry, tmp_path):
    d = tmp_path / "in"
    make_model_dir(d, seed=5, n_layers=2, width=32)
    v = registry.commit("m", [d], "one")
    from tvc.store.packs import read_pack_index

    backend = registry.store.backend
    kinds = {
        e.id: e.kind for name in backend.list("packs/") for e in read_pack_index(backend, name)
    }
    assert kinds[v.id] == Kind.VERSION
    assert all(kinds[fe.manifest_id] == Kind.MANIFEST for fe in v.files)


def test_rm_and_retention_reclaim_bytes(registry, tmp_path):
    rng = np.random.default_rng(0)
    sizes = []
    for i in range(6):
        d = tmp_path / f"in{i}"
        make_model_dir(d, seed=100 + i, n_layers=2, width=128)  # unrelated weights each time
        registry.commit("m", [d], f"c{i}")
        sizes.append(rng.integers(1))
    registry.tag("m", "keep", "v2")
    registry.alias("m", "production", "v3")
    before = registry.stats()["pack_bytes"]
    report = registry.gc(keep_last=2, grace=0)
    assert report["removed"] == ["m@v1", "m@v4"]  # v2 tagged, v3 aliased, v5-v6 the last two
    assert report["bytes_freed"] > 0 and registry.stats()["pack_bytes"] < before
    assert [v.number for v in registry.log("m")] == [6, 5, 3, 2]
    audit = registry.audit("m")
    assert sorted(e["name"] for e in audit if e["kind"] == "rm") == ["v1", "v4"]
    assert registry.fsck(read_data=True)["ok"]
    registry.commit("m", [tmp_path / "in0"], "again")
    assert registry.resolve("m").number == 7  # numbers of deleted versions are never reused


def test_rm_refuses_protected_versions_and_moves_the_branch_back(registry, tmp_path):
    for i in range(3):
        d = tmp_path / f"in{i}"
        make_model_dir(d, seed=i, n_layers=2, width=32)
        registry.commit("m", [d], f"c{i}")
    registry.alias("m", "production", "v3")
    with pytest.raises(tvc.errors.ConflictError, match="alias production"):
        registry.rm("m@v3")
    registry.rm("m@v3", force=True, reason="bad weights")
    assert registry.resolve("m").number == 2  # main moved back
    assert registry.aliases("m") == []
    with pytest.raises(tvc.errors.UnknownRefError, match="deleted"):
        registry.resolve("m@v3")
    registry.rm_model("m")
    assert [m["model"] for m in registry.models()] == []


def test_deleted_versions_leave_search_and_models(registry, tmp_path):
    f = tmp_path / "a.txt"
    for i in range(3):
        f.write_text(str(i))
        registry.commit("m", [f], f"c{i}", metrics={"acc": i / 10})
    registry.rm("m@v2")
    assert [v.number for v in registry.search("metrics.acc >= 0")] == [3, 1]
    assert registry.models()[0]["versions"] == 2
    assert registry.stats()["versions"] == 2


def test_a_gc_killed_midway_does_not_block_the_next_one(registry, tmp_path):
    import subprocess
    import sys

    from tvc.store.index import leases

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    with registry.meta.write() as conn:
        conn.execute(
            leases.insert().values(
                name="gc", holder=f"{os.uname().nodename}:{dead.pid}:x", expires=2e9
            )
        )
    registry.gc(grace=0)  # takes the dead holder's lease over
    with registry.meta.write() as conn:  # a live holder elsewhere still blocks
        conn.execute(leases.insert().values(name="gc", holder="otherhost:1:x", expires=2e9))
    with pytest.raises(tvc.errors.ConflictError, match="another gc"):
        registry.gc(grace=0)
