"""One conformance suite for every backend: local directory, memory and S3 (a real SeaweedFS
started by the test session, see tests/conftest.py ``_seaweed``)."""

from __future__ import annotations

import pytest

from tvc.errors import IntegrityError, StorageError, UsageError
from tvc.store import hashing
from tvc.store.backends import LocalBackend, MemoryBackend
from tvc.store.backends.base import NotFound


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request, tmp_path):
    if request.param == "local":
        yield LocalBackend(tmp_path / "objects")
    elif request.param == "memory":
        yield MemoryBackend()
    else:
        from tvc.store.backends import open_backend

        b = open_backend(request.getfixturevalue("s3_url"))
        yield b
        b.close()


def test_put_get_roundtrip(backend):
    backend.put("packs/ab/x.pack", b"hello world")
    assert backend.get("packs/ab/x.pack") == b"hello world"
    assert backend.get("packs/ab/x.pack", 6, 5) == b"world"
    assert backend.get("packs/ab/x.pack", 6) == b"world"
    assert backend.size("packs/ab/x.pack") == 11
    assert backend.exists("packs/ab/x.pack")


def test_put_from_file(backend, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01" * 1000)
    backend.put("a/b", src)
    assert backend.get("a/b") == b"\x00\x01" * 1000


def test_missing_object(backend):
    assert not backend.exists("nope")
    with pytest.raises(StorageError):
        backend.get("nope")
    with pytest.raises(StorageError):
        backend.size("nope")


def test_range_past_end_is_integrity_error(backend):
    backend.put("x", b"abc")
    with pytest.raises(IntegrityError):
        backend.get("x", 1, 10)


def test_list_and_delete(backend):
    for name in ("packs/00/a", "packs/01/b", "other/c"):
        backend.put(name, name.encode())
    assert sorted(backend.list("packs/")) == ["packs/00/a", "packs/01/b"]
    assert sorted(backend.list()) == ["other/c", "packs/00/a", "packs/01/b"]
    backend.delete("packs/00/a")
    backend.delete("packs/00/a")  # absent: not an error
    assert sorted(backend.list("packs/")) == ["packs/01/b"]


def test_put_again_is_harmless(backend):
    """Names are content hashes: a second put of a name (two writers of one pack, a journal
    event flushed twice) carries the same bytes and must succeed, leaving them whole."""
    backend.put("x", b"same bytes")
    backend.put("x", b"same bytes")
    assert backend.get("x") == b"same bytes"
    assert sorted(backend.list()) == ["x"]


def test_put_over_a_damaged_copy_replaces_it_whole(backend):
    """Other bytes under a content-addressed name are a damaged copy; storing the right bytes
    again (what a self-healing commit does) replaces it whole."""
    backend.put("x", b"first version, long")
    backend.put("x", b"second")
    assert backend.get("x") == b"second"
    backend.put("x", b"third!")  # same size, other bytes
    assert backend.get("x") == b"third!"


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/../b", "a//b", "", "a/./b", "a\\b"])
def test_hostile_names_rejected(backend, name):
    with pytest.raises(UsageError):
        backend.put(name, b"x")
    with pytest.raises(UsageError):
        backend.get(name)


def test_wrong_hash_save_fails_and_leaves_nothing(backend, tmp_path):
    data = b"payload"
    with pytest.raises(IntegrityError):
        backend.put("packs/aa/p", data, expected="0" * 64)
    assert not backend.exists("packs/aa/p")
    assert list(backend.list()) == []
    backend.put("packs/aa/p", data, expected=hashing.digest(data))
    assert backend.get("packs/aa/p") == data
    src = tmp_path / "f"
    src.write_bytes(b"other")
    with pytest.raises(IntegrityError):
        backend.put("packs/aa/q", src, expected=hashing.digest(data))
    assert not backend.exists("packs/aa/q")


def test_empty_object(backend):
    backend.put("empty", b"")
    assert backend.get("empty") == b""
    assert backend.size("empty") == 0


def test_mtime_says_when_an_object_was_written(backend):
    import time

    before = time.time()
    backend.put("packs/ab/x.pack", b"data")
    after = time.time()
    assert before - 2 <= backend.mtime("packs/ab/x.pack") <= after + 2
    with pytest.raises(NotFound):
        backend.mtime("packs/ab/missing.pack")
