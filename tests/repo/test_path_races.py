"""No escape at any moment: the tree changes while commit or checkout runs.

Each race is made certain, not likely: the change is made from the progress callback, which
commit calls once every file is listed and parsed (``start``) and after each chunk it read
(``advance``), and checkout calls while it writes into its staging area. Both are real seams
of the code under test, not mocks; the change is the one an attacker's process would make.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tvc.errors import PathError
from tvc.repo.files import NoProgress

SECRET = b"root-only secret, never to be stored or written elsewhere" * 1000


class Hook(NoProgress):
    """Runs ``at_start`` when the work starts, ``at_advance`` after its first piece, once each."""

    def __init__(self, at_start=None, at_advance=None) -> None:
        self.at_start, self.at_advance = at_start, at_advance
        self.fired = 0

    def start(self, description: str, total: int) -> None:
        if self.at_start:
            self.at_start()
            self.at_start = None
            self.fired += 1

    def advance(self, n: int) -> None:
        if self.at_advance:
            self.at_advance()
            self.at_advance = None
            self.fired += 1


def same_stat_as(path: Path, like: Path) -> None:
    """Give ``path`` the size check's view of ``like``: same size (asserted), same mtime."""
    assert path.stat().st_size == like.stat().st_size
    st = like.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def nothing_stored(registry) -> bool:
    st = registry.stats()
    return st["versions"] == 0 and st["chunks"] == 0


@pytest.fixture
def secret(tmp_path):
    p = tmp_path / "outside" / "secret.bin"
    p.parent.mkdir()
    p.write_bytes(SECRET)
    return p


def test_file_swapped_for_a_symlink_after_listing(registry, tmp_path, secret):
    d = tmp_path / "model"
    d.mkdir()
    w = d / "w.bin"
    w.write_bytes(b"x" * len(SECRET))
    same_stat_as(w, secret)

    def swap():
        w.unlink()
        w.symlink_to(secret)

    hook = Hook(at_start=swap)
    with pytest.raises(PathError, match=r"w\.bin: replaced by a symlink"):
        registry.commit("m", [d], "race", progress=hook)
    assert hook.fired == 1 and nothing_stored(registry)


def test_file_replaced_by_another_file_after_listing(registry, tmp_path, secret):
    d = tmp_path / "model"
    d.mkdir()
    w = d / "w.bin"
    w.write_bytes(b"x" * len(SECRET))
    other = tmp_path / "outside" / "copy.bin"
    other.write_bytes(SECRET)
    same_stat_as(w, other)
    hook = Hook(at_start=lambda: os.replace(other, w))
    with pytest.raises(PathError, match=r"w\.bin: replaced while committing"):
        registry.commit("m", [d], "race", progress=hook)
    assert hook.fired == 1 and nothing_stored(registry)


def test_directory_swapped_for_a_symlink_after_listing(registry, tmp_path, secret):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    w = d / "sub" / "secret.bin"
    w.write_bytes(b"x" * len(SECRET))
    same_stat_as(w, secret)

    def swap():
        (d / "sub").rename(tmp_path / "moved-away")
        (d / "sub").symlink_to(secret.parent)

    hook = Hook(at_start=swap)
    with pytest.raises(PathError, match="replaced by a symlink"):
        registry.commit("m", [d], "race", progress=hook)
    assert hook.fired == 1 and nothing_stored(registry)


def test_file_rewritten_in_place_while_read_is_refused_not_stored_torn(registry, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    w = d / "w.bin"
    w.write_bytes(os.urandom(8 << 20))  # many chunks: the rewrite lands between reads
    os.utime(w, ns=(10**18, 10**18))  # an mtime no rewrite now can share

    def rewrite():
        with open(w, "r+b") as f:  # same size, other bytes: only mtime/ctime tell
            f.seek(4 << 20)
            f.write(os.urandom(4 << 20))

    hook = Hook(at_advance=rewrite)
    with pytest.raises(PathError, match=r"w\.bin: file changed while committing"):
        registry.commit("m", [d], "race", progress=hook)
    assert hook.fired == 1 and registry.stats()["versions"] == 0


def test_file_deleted_during_commit(registry, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "a.bin").write_bytes(b"a" * 1000)
    (d / "b.bin").write_bytes(b"b" * 1000)
    hook = Hook(at_start=lambda: (d / "b.bin").unlink())
    with pytest.raises(PathError, match=r"b\.bin: deleted while committing"):
        registry.commit("m", [d], "race", progress=hook)
    assert hook.fired == 1 and registry.stats()["versions"] == 0


def test_symlinked_sibling_directory_is_not_a_loop(registry, tmp_path):
    d = tmp_path / "model"
    (d / "a").mkdir(parents=True)
    (d / "a" / "x.bin").write_bytes(b"x")
    (d / "b").symlink_to("a")
    (d / "abs").symlink_to(d / "a" / "x.bin")  # absolute, but inside: followed
    v = registry.commit("m", [d], "sibling").version
    assert [f.path for f in v.files] == ["a/x.bin", "abs", "b/x.bin"]


@pytest.mark.parametrize(
    "make",
    [
        lambda d: (d / "loop").symlink_to("."),
        lambda d: (d / "sub" / "up").symlink_to(".."),
        lambda d: (d / "self").symlink_to("self"),
        lambda d: ((d / "p").symlink_to("q"), (d / "q").symlink_to("p")),
    ],
    ids=["to-itself", "to-parent", "self-link", "ping-pong"],
)
def test_symlink_loops_are_one_clear_error(registry, tmp_path, make):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x.bin").write_bytes(b"x")
    make(d)
    with pytest.raises(PathError, match="loop"):
        registry.commit("m", [d], "loop")


def test_symlink_out_through_dotdot_refused(registry, tmp_path, secret):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "leak").symlink_to("../../outside/secret.bin")
    with pytest.raises(PathError, match="outside"):
        registry.commit("m", [d], "escape")
    assert nothing_stored(registry)


def test_non_utf8_name_is_one_clear_error(registry, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    with open(os.path.join(os.fsencode(d), b"bad-\xff.bin"), "wb") as f:
        f.write(b"x")
    with pytest.raises(PathError, match="not valid UTF-8"):
        registry.commit("m", [d], "bad name")


# -- checkout ------------------------------------------------------------------------------
@pytest.fixture
def versioned(registry, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "w.bin").write_bytes(os.urandom(1 << 20))
    (src / "a.txt").write_bytes(b"a one")  # moved into place before sub/w.bin: undone
    registry.commit("m", [src], "one")
    (src / "sub" / "w.bin").write_bytes(os.urandom(1 << 20))
    (src / "a.txt").write_bytes(b"a two")
    registry.commit("m", [src], "two")
    return registry


def test_symlink_planted_in_a_fresh_destination_during_checkout(versioned, tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "elsewhere"
    outside.mkdir()
    hook = Hook(at_advance=lambda: (dest / "sub").symlink_to(outside))
    with pytest.raises(PathError, match="changed during the checkout"):
        versioned.checkout("m@v1", dest, progress=hook)
    assert hook.fired == 1 and os.listdir(outside) == []
    assert sorted(os.listdir(dest)) == ["sub"]  # the planted link; nothing of tvc's


def test_directory_swapped_for_a_symlink_during_checkout(versioned, tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "elsewhere"
    outside.mkdir()
    versioned.checkout("m@v1", dest)

    def swap():
        (dest / "sub").rename(tmp_path / "moved")
        (dest / "sub").symlink_to(outside)

    hook = Hook(at_advance=swap)
    with pytest.raises(PathError, match="changed during the checkout"):
        versioned.checkout("m@v2", dest, progress=hook)
    assert hook.fired == 1 and os.listdir(outside) == []
    assert (dest / "a.txt").read_bytes() == b"a one"  # the swap was undone


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 RENAME_NOREPLACE")
def test_a_file_appearing_during_checkout_is_not_overwritten(versioned, tmp_path):
    dest = tmp_path / "dest"
    hook = Hook(at_advance=lambda: (dest / "a.txt").write_bytes(b"written meanwhile"))
    with pytest.raises(PathError, match="changed during the checkout"):
        versioned.checkout("m@v1", dest, progress=hook)
    assert hook.fired == 1 and (dest / "a.txt").read_bytes() == b"written meanwhile"
    assert sorted(os.listdir(dest)) == ["a.txt"]  # and nothing else of this checkout
