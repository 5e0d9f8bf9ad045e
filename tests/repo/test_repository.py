from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

import tvc
from tvc.errors import (
    AmbiguousRefError,
    ExistsError,
    FormatError,
    IntegrityError,
    LockTimeoutError,
    PathError,
    UnknownRefError,
    UnsafePickleError,
)

from conftest_helpers import corrupt_one_pack


def test_init_twice_refused(registry):
    with pytest.raises(ExistsError):
        tvc.Registry.init(registry.root)


def test_commit_checkout_roundtrip(registry, model_dir, tmp_path):
    res = registry.commit(
        "bert", [model_dir], "baseline", params={"lr": 3e-5}, metrics={"acc": 0.9}
    )
    v = res.version
    assert v.ref == "bert@v1" and len(v.id) == 64
    assert [f.path for f in v.files] == ["config.json", "model.safetensors"]
    assert res.new_bytes > 0 and res.logical_bytes == sum(f.size for f in v.files)
    dest = tmp_path / "restore"
    registry.checkout("bert@v1", dest)
    for name in ("config.json", "model.safetensors"):
        assert (dest / name).read_bytes() == (model_dir / name).read_bytes()
    assert registry.read("bert@main", "config.json") == (model_dir / "config.json").read_bytes()
    shown = registry.show("bert@v1")
    assert shown.params == {"lr": 3e-5} and shown.metrics == {"acc": 0.9}
    # checking out again over identical files is a no-op; over different ones needs force
    registry.checkout("bert@v1", dest)
    (dest / "config.json").write_text("{}")
    with pytest.raises(ExistsError):
        registry.checkout("bert@v1", dest)
    registry.checkout("bert@v1", dest, force=True)
    assert (dest / "config.json").read_bytes() == (model_dir / "config.json").read_bytes()


def test_single_file_commit_uses_its_name(registry, model_dir, tmp_path):
    registry.commit("m", [model_dir / "model.safetensors"], "one file")
    registry.checkout("m", tmp_path / "d")
    # beside the record of what the checkout wrote (tvc.repo.worktree)
    assert sorted(os.listdir(tmp_path / "d")) == [".tvc-checkout", "model.safetensors"]


def test_fine_tune_stores_about_k_of_n(registry, make_dir):
    base = make_dir("base", seed=1)
    tuned = make_dir("tuned", seed=1, changed=(4, 5))  # 2 of 6 big tensors changed
    r1 = registry.commit("m", [base], "base")
    r2 = registry.commit("m", [tuned], "tuned")
    assert r2.version.parents == (r1.version.id,)
    assert r2.new_bytes < 0.45 * r1.new_bytes
    assert r2.new_chunks <= 3  # two changed tensors (+ maybe the header)


def test_same_file_again_or_elsewhere_adds_no_chunk_bytes(registry, model_dir):
    registry.commit("a", [model_dir], "first")
    again = registry.commit("a", [model_dir], "again")
    other = registry.commit("b", [model_dir], "copy into another model")
    assert again.new_bytes == 0 and other.new_bytes == 0


def test_reference_syntax(registry, make_dir):
    v1 = registry.commit("m", [make_dir("a", seed=1)], "one").version
    v2 = registry.commit("m", [make_dir("b", seed=2)], "two").version
    v3 = registry.commit("m", [make_dir("c", seed=3)], "three").version
    registry.tag("m", "release-1", "v2")
    registry.branch("m", "exp", "v1")
    assert registry.resolve("m").id == v3.id
    assert registry.resolve("m@main").id == v3.id
    assert registry.resolve("m@v1").id == v1.id
    assert registry.resolve("m@release-1").id == v2.id
    assert registry.resolve("m@exp").id == v1.id
    assert registry.resolve(f"m@{v2.id[:8]}").id == v2.id
    assert registry.resolve("m~1").id == v2.id
    assert registry.resolve("m@main~2").id == v1.id
    assert registry.resolve("m@v3~1~1").id == v1.id
    with pytest.raises(UnknownRefError):
        registry.resolve("m@v9")
    with pytest.raises(UnknownRefError):
        registry.resolve("m~3")
    with pytest.raises(UnknownRefError):
        registry.resolve("nope")
    with pytest.raises(UnknownRefError):
        registry.resolve("m@nothing")
    registry.tag("m", "exp", "v2")  # a tag named like a branch, pointing elsewhere
    with pytest.raises(AmbiguousRefError, match="branch exp"):
        registry.resolve("m@exp")


def test_commit_takes_one_path_as_well_as_a_list(registry, model_dir):
    """A bare string is one path, not a sequence of one-character paths."""
    one = registry.commit("bert", str(model_dir), "as str").version
    two = registry.commit("bert", model_dir, "as Path").version
    assert [f.path for f in one.files] == ["config.json", "model.safetensors"]
    assert two.files == one.files


def test_commit_on_branch(registry, make_dir):
    registry.commit("m", [make_dir("a", seed=1)], "one")
    r = registry.commit("m", [make_dir("b", seed=2)], "exp", branch="exp-lr")
    assert registry.resolve("m@exp-lr").id == r.version.id
    assert registry.resolve("m@main").number == 1
    assert r.version.parents == (registry.resolve("m@v1").id,)


def test_log_order(registry, make_dir):
    for i in range(3):
        registry.commit("m", [make_dir(f"d{i}", seed=i)], f"c{i}")
    assert [v.number for v in registry.log("m")] == [3, 2, 1]
    assert [v.number for v in registry.log("m", 2)] == [3, 2]


def test_tensor_reads_only_its_chunks(registry, make_dir):
    tensors = make_dir("a", seed=5, width=1200)  # 1200x1200 f32 = 5.76 MB: two pieces
    import safetensors.numpy as stn

    arrays = stn.load_file(str(tensors / "model.safetensors"))
    registry.commit("m", [tensors], "x")
    reader = registry.open("m@v1")
    calls = []
    real_get = registry.store.backend.get

    def counting_get(name, offset=0, length=None):
        calls.append(length)
        return real_get(name, offset, length)

    registry.store.backend.get = counting_get
    got = reader.tensor("layers.3.weight")
    np.testing.assert_array_equal(got, arrays["layers.3.weight"])
    assert len(calls) == 2  # the tensor's two pieces, nothing else
    assert sorted(reader.files) == ["config.json", "model.safetensors"]


def test_malformed_safetensors_stores_nothing(registry, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "w.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(FormatError):
        registry.commit("m", [bad], "bad")
    st = registry.stats()
    assert st["chunks"] == 0 and st["versions"] == 0 and st["packs"] == 0
    r = registry.commit("m", [bad], "opaque", parse=False)
    assert r.version.files[0].format == "opaque"


def test_symlink_escape_refused(registry, tmp_path, model_dir):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    os.symlink(secret, model_dir / "leak.txt")
    with pytest.raises(PathError, match="outside"):
        registry.commit("m", [model_dir], "escape")
    assert registry.stats()["chunks"] == 0


def test_missing_path(registry, tmp_path):
    with pytest.raises(PathError):
        registry.commit("m", [tmp_path / "nope"], "x")


def test_bit_flip_caught_on_read_and_fsck(registry, model_dir, tmp_path):
    registry.commit("m", [model_dir], "x")
    assert registry.fsck(read_data=True)["ok"]
    corrupt_one_pack(registry.dir / "objects")
    with pytest.raises(IntegrityError) as info:
        registry.checkout("m@v1", tmp_path / "restore")
    assert "chunk" in str(info.value) and "m@v1:" in str(info.value)
    res = registry.fsck(read_data=True)
    assert not res["ok"]
    assert any("m@v1:" in e for e in res["errors"])
    assert not (tmp_path / "restore" / "model.safetensors").exists()


def test_gc_removes_only_unreachable(registry, model_dir, tmp_path):
    registry.commit("m", [model_dir], "x")
    stray = registry.dir / "objects" / "packs" / "ff" / ("f" * 64 + ".pack")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"TVCPACK1 left by a crash")
    assert registry.gc()["unindexed_packs"] == 0 and stray.exists()  # may be a write in flight
    dry = registry.gc(dry_run=True, grace=0)
    assert dry["unindexed_packs"] == 1 and stray.exists()
    res = registry.gc(grace=0)
    assert res["unindexed_packs"] == 1 and not stray.exists()
    assert registry.fsck(read_data=True)["ok"]
    registry.checkout("m@v1", tmp_path / "after-gc")
    assert registry.gc()["bytes_freed"] == 0


def test_second_writer_times_out_clearly(registry, model_dir, monkeypatch):
    monkeypatch.setenv("TVC_LOCK_TIMEOUT", "0.3")
    held = sqlite3.connect(registry.dir / "tvc.db", isolation_level=None)
    held.execute("BEGIN IMMEDIATE")  # another writer in its (normally short) transaction
    try:
        with pytest.raises(LockTimeoutError, match="locked"):
            registry.commit("m", [model_dir], "blocked")
    finally:
        held.execute("ROLLBACK")
        held.close()
    registry.commit("m", [model_dir], "now fine")


def test_registry_found_from_subdirectory(registry, monkeypatch):
    sub = registry.root / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    with tvc.Registry() as reg:
        assert reg.root == registry.root


def test_unsafe_pickle_refused_unless_allowed(registry, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    d = tmp_path / "pk"
    d.mkdir()
    (d / "model.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UnsafePickleError, match="allow-unsafe-pickle"):
        registry.commit("m", [d], "evil")
    assert registry.stats()["chunks"] == 0
    registry.commit("m", [d], "evil, knowingly", allow_unsafe_pickle=True)


@pytest.mark.parametrize(
    "payload",
    [
        b"GGUF\x03\x00\x00\x00" + (2**40).to_bytes(8, "little") + bytes(8),  # absurd tensor count
        b"GGUF\x03\x00\x00\x00",  # truncated header
    ],
)
def test_hostile_gguf_stores_nothing(registry, tmp_path, payload):
    d = tmp_path / "g"
    d.mkdir()
    (d / "m.gguf").write_bytes(payload)
    with pytest.raises(FormatError):
        registry.commit("m", [d], "bad gguf")
    assert registry.stats()["packs"] == 0


def test_checkout_only_some_paths(registry, model_dir, tmp_path):
    (model_dir / "tok").mkdir()
    (model_dir / "tok" / "vocab.txt").write_text("a\nb\n")
    registry.commit("m", [model_dir], "x")
    got = registry.checkout("m", tmp_path / "d", only=["tok", "config.json"])
    assert sorted(p.relative_to(tmp_path / "d").as_posix() for p in got) == [
        "config.json",
        "tok/vocab.txt",
    ]
    assert not (tmp_path / "d" / "model.safetensors").exists()
    with pytest.raises(UnknownRefError, match="nope"):
        registry.checkout("m", tmp_path / "e", only=["nope"])
