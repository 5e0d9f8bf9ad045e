"""Checkout is exact and atomic (tvc.repo.worktree): what DEST holds after a checkout, after a
failed one, after a killed one; names up to NAME_MAX; the umask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tvc.errors import ExistsError, IntegrityError, PathError, StorageError

from conftest_helpers import corrupt_one_pack
from faults import FailingBackend

RECORD, STAGING_PREFIX = ".tvc-checkout", ".tvc-tmp-"  # the names tvc owns in DEST


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (the record aside), by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != RECORD:
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its kind, bytes and inode: 'as it was' means all of it."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        body = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[p.relative_to(root).as_posix()] = (st.st_mode, st.st_ino, st.st_mtime_ns, body)
    return out


V1 = {
    "a.txt": b"a one",
    "sub/b.txt": b"b one",
    "sub/deep/c.txt": b"c one",
    "keep.txt": b"same in both",
}
# d.txt is v2's largest file: its pack is the one corrupt_one_pack damages
V2 = {"a.txt": b"a two, longer", "d.txt": os.urandom(1 << 16), "keep.txt": b"same in both"}


@pytest.fixture
def two_versions(registry, tmp_path):
    registry.commit("m", [write_tree(tmp_path / "v1", V1)], "one")
    registry.commit("m", [write_tree(tmp_path / "v2", V2)], "two")
    return registry


def test_checkout_over_an_earlier_one_leaves_exactly_that_version(two_versions, tmp_path):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    assert tree(dest) == V1
    keep_ino = (dest / "keep.txt").stat().st_ino
    res = two_versions.checkout("m@v2", dest)
    assert tree(dest) == V2
    assert not (dest / "sub").exists()  # directories left empty go too
    assert sorted(p.relative_to(dest).as_posix() for p in res.removed) == [
        "sub/b.txt",
        "sub/deep/c.txt",
    ]
    assert [p.name for p in res.unchanged] == ["keep.txt"]
    assert (dest / "keep.txt").stat().st_ino == keep_ino  # identical: not rewritten
    assert res.kept == []
    two_versions.checkout("m@v1", dest)
    assert tree(dest) == V1


def test_files_tvc_did_not_write_are_kept_and_reported(two_versions, tmp_path):
    dest = write_tree(tmp_path / "dest", {"mine.txt": b"user", "notes/n.txt": b"n"})
    res = two_versions.checkout("m@v1", dest)
    assert sorted(p.name for p in res.kept) == ["mine.txt", "n.txt"]
    res = two_versions.checkout("m@v2", dest)
    assert sorted(p.name for p in res.kept) == ["mine.txt", "n.txt"]
    assert tree(dest) == V2 | {"mine.txt": b"user", "notes/n.txt": b"n"}
    res = two_versions.checkout("m@v2", dest, force=True)  # DEST holds a record: force cleans
    assert sorted(p.name for p in res.removed) == ["mine.txt", "n.txt"]
    assert tree(dest) == V2 and not (dest / "notes").exists()


def test_force_never_cleans_a_directory_tvc_never_checked_out_into(two_versions, tmp_path):
    dest = write_tree(tmp_path / "dest", {"mine.txt": b"user"})
    res = two_versions.checkout("m@v1", dest, force=True)
    assert [p.name for p in res.kept] == ["mine.txt"] and (dest / "mine.txt").exists()


def test_a_file_changed_since_is_the_users(two_versions, tmp_path):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    (dest / "sub" / "b.txt").write_bytes(b"edited by hand")  # v2 lacks it: kept
    (dest / "a.txt").write_bytes(b"also edited")  # v2 differs: a conflict
    before = snapshot(dest)
    with pytest.raises(ExistsError, match=r"a\.txt exists with other content"):
        two_versions.checkout("m@v2", dest)
    assert snapshot(dest) == before
    res = two_versions.checkout("m@v2", dest, force=True)
    assert (dest / "a.txt").read_bytes() == V2["a.txt"]
    assert res.removed and not (dest / "sub").exists()  # force: the edited b.txt goes too


def test_the_users_file_kept_without_force(two_versions, tmp_path):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    (dest / "sub" / "b.txt").write_bytes(b"edited by hand")
    res = two_versions.checkout("m@v2", dest)
    assert [p.relative_to(dest).as_posix() for p in res.kept] == ["sub/b.txt"]
    assert tree(dest) == V2 | {"sub/b.txt": b"edited by hand"}


def test_partial_checkout_touches_nothing_outside_its_paths(registry, tmp_path):
    registry.commit("m", [write_tree(tmp_path / "v1", V1)], "one")
    v2 = {"a.txt": b"a two", "sub/new.txt": b"new"}
    registry.commit("m", [write_tree(tmp_path / "v2", v2)], "two")
    dest = write_tree(tmp_path / "dest", {"sub/user.txt": b"u"})
    registry.checkout("m@v1", dest)
    res = registry.checkout("m@v2", dest, only=["sub"])
    assert tree(dest) == {
        "a.txt": b"a one",  # outside --path: v1's file stays
        "keep.txt": b"same in both",
        "sub/new.txt": b"new",
        "sub/user.txt": b"u",
    }
    assert [p.name for p in res.kept] == ["user.txt"]
    # the record still knows a.txt and keep.txt as tvc's: a full checkout replaces/removes them
    res = registry.checkout("m@v2", dest)
    assert tree(dest) == v2 | {"sub/user.txt": b"u"}
    assert sorted(p.name for p in res.removed) == ["keep.txt"]


def test_directories_and_files_in_the_way(two_versions, tmp_path):
    dest = write_tree(tmp_path / "dest", {"a.txt/inner": b"x"})
    with pytest.raises(ExistsError, match=r"a\.txt is a directory"):
        two_versions.checkout("m@v1", dest, force=True)
    dest = write_tree(tmp_path / "dest2", {"sub": b"a file where v1 has a directory"})
    before = snapshot(dest)
    with pytest.raises(ExistsError, match="sub is in the way"):
        two_versions.checkout("m@v1", dest)
    assert snapshot(dest) == before
    two_versions.checkout("m@v1", dest, force=True)
    assert tree(dest) == V1


@pytest.mark.parametrize("fault", ["bit flip", "read fails"])
def test_a_failed_checkout_leaves_dest_as_it_was(two_versions, tmp_path, fault):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    (dest / "mine.txt").write_bytes(b"user")
    before = snapshot(dest)
    if fault == "bit flip":
        corrupt_one_pack(two_versions.dir / "objects")
        expected = IntegrityError
    else:
        store = two_versions.store
        store.backend = FailingBackend(store.backend, get="rE")  # the second read fails
        expected = StorageError
    with pytest.raises(expected):  # force: would replace and remove, had it not failed
        two_versions.checkout("m@v2", dest, force=True)
    assert snapshot(dest) == before
    if fault == "read fails":
        store.backend = FailingBackend(store.backend, get="rE")
    with pytest.raises(expected):
        two_versions.checkout("m@v2", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # a destination the checkout made goes too


def test_destination_that_is_a_file_or_cannot_be_made(two_versions, tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(PathError, match="not a directory"):
        two_versions.checkout("m@v1", f)
    with pytest.raises(PathError, match="not a directory"):
        two_versions.checkout("m@v1", f / "below")
    assert f.read_bytes() == b"x"
    with pytest.raises(PathError, match="NUL"):
        two_versions.checkout("m@v1", tmp_path / "a\x00b")
    with pytest.raises(PathError, match="too long"):
        two_versions.checkout("m@v1", tmp_path / ("n" * 300))
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(PathError):
        two_versions.checkout("m@v1", loop / "x")


KILLED = textwrap.dedent(
    """
    import os, sys
    import tvc
    from tvc.repo.files import NoProgress

    class Stall(NoProgress):
        def advance(self, n):  # mid-staging: say so, then wait to be killed
            print("staging", flush=True)
            os.read(0, 1)

    tvc.Registry(sys.argv[1]).checkout(sys.argv[2], sys.argv[3], progress=Stall())
    """
)


def test_a_killed_checkout_leaves_nothing_after_the_next_run(two_versions, tmp_path):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    before = snapshot(dest)
    p = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(two_versions.root), "m@v2", str(dest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert p.stdout.readline() == b"staging\n"
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
        p.stdin.close()
        p.stdout.close()
    left = [n for n in os.listdir(dest) if n.startswith(STAGING_PREFIX)]
    assert left  # the kill did leave a staging area (else this test shows nothing) ...
    assert {k: v for k, v in snapshot(dest).items() if not k.startswith(STAGING_PREFIX)} == before
    two_versions.checkout("m@v2", dest)  # ... which the next run removes
    assert sorted(os.listdir(dest)) == sorted([RECORD, "a.txt", "d.txt", "keep.txt"])
    assert tree(dest) == V2


def test_names_up_to_name_max_round_trip(registry, tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    names = {
        "x" * 242: b"242",
        "y" * (name_max - 4) + ".bin": b"near the limit",
        "z" * name_max: b"at the limit",
        "d" * name_max + "/" + "e" * name_max: b"nested",
    }
    src = write_tree(tmp_path / "long", names)
    registry.commit("m", [src], "long names")
    dest = tmp_path / "dest"
    registry.checkout("m", dest)
    assert tree(dest) == names
    registry.checkout("m", dest)  # and again over itself
    assert tree(dest) == names


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_checked_out_files_honour_the_umask(two_versions, tmp_path, umask):
    old = os.umask(umask)
    try:
        dest = tmp_path / "dest"
        two_versions.checkout("m@v1", dest)
    finally:
        os.umask(old)
    for rel in V1:
        assert (dest / rel).stat().st_mode & 0o777 == 0o666 & ~umask, rel
    assert (dest / "sub").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_version_file_with_a_name_the_checkout_reserves(registry, tmp_path):
    # a directory's bookkeeping is never committed, but a file given by name is taken as is
    registry.commit("m", [write_tree(tmp_path / "v", {RECORD: b"{}"}) / RECORD], "hostile")
    with pytest.raises(PathError, match="reserves"):
        registry.checkout("m", tmp_path / "dest")


def test_a_checked_out_directory_commits_without_the_checkouts_bookkeeping(two_versions, tmp_path):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    (dest / (STAGING_PREFIX + "left")).mkdir()  # as a killed checkout would leave it
    v = two_versions.commit("m", [dest], "again").version
    assert sorted(f.path for f in v.files) == sorted(V1)


def test_a_failure_at_the_last_step_of_the_swap_undoes_it_all(two_versions, tmp_path):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    (dest / RECORD).unlink()
    (dest / RECORD).mkdir()  # the record cannot be renamed over a directory: the last step fails
    before = snapshot(dest)
    with pytest.raises(PathError):
        two_versions.checkout("m@v2", dest, force=True)  # would replace, add and remove
    assert snapshot(dest) == before


def test_one_checkout_into_a_destination_at_a_time(two_versions, tmp_path, monkeypatch):
    import fcntl

    from tvc.errors import LockTimeoutError

    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    before = snapshot(dest)
    monkeypatch.setenv("TVC_LOCK_TIMEOUT", "0")
    held = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)  # as a running checkout holds it
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LockTimeoutError, match="another checkout"):
            two_versions.checkout("m@v2", dest)
        assert snapshot(dest) == before
    finally:
        os.close(held)
    two_versions.checkout("m@v2", dest)
    assert tree(dest) == V2


def test_a_file_changed_in_the_tick_it_was_written_is_still_the_users(two_versions, tmp_path):
    dest = tmp_path / "dest"
    two_versions.checkout("m@v1", dest)
    b = dest / "sub" / "b.txt"
    st = b.stat()
    b.write_bytes(b"b ONE")  # same size, same inode ...
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... same mtime: stat cannot tell
    # as if the record had been written in that same clock tick (racy, as git calls it)
    os.utime(dest / RECORD, ns=(st.st_mtime_ns, st.st_mtime_ns))
    res = two_versions.checkout("m@v2", dest)
    assert [p.relative_to(dest).as_posix() for p in res.kept] == ["sub/b.txt"]
    assert b.read_bytes() == b"b ONE"
