"""lazyfs itself: what survives a power-off under each model, and that SQLite's WAL works on it.

Each test mounts lazyfs, does something through the mount, powers off and looks at the backing
directory: the disk as the next boot finds it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from powerloss import lazyfs

pytestmark = pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="no /dev/fuse here")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, *, sync: bool) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


@pytest.fixture
def disk(tmp_path):
    d = tmp_path / "disk"
    d.mkdir()
    return d


def test_posix_keeps_only_what_was_fsynced(disk, tmp_path):
    mnt = tmp_path / "mnt"
    with lazyfs.mounted(disk, mnt, "posix"):
        write(mnt / "kept", b"synced", sync=True)
        write(mnt / "empty", b"never synced", sync=False)
        fsync_path(mnt)  # both names durable; only one's data
        write(mnt / "unnamed", b"synced, but its name never was", sync=True)
        (mnt / "sub").mkdir()
        write(mnt / "sub" / "f", b"in a directory whose own name is not durable", sync=True)
        fsync_path(mnt / "sub")
        with open(mnt / "kept", "r+b") as f:  # unsynced overwrite, append and truncate
            os.pwrite(f.fileno(), b"S", 0)
            f.seek(0, os.SEEK_END)
            f.write(b" and more")
            f.flush()
            # while the power is on, every write is visible, at any offset
            assert (mnt / "kept").read_bytes() == b"Synced and more"
            assert os.pread(f.fileno(), 3, 1) == b"ync"
        os.truncate(mnt / "kept", 2)
        assert (mnt / "kept").read_bytes() == b"Sy"
        assert os.statvfs(mnt).f_bsize > 0
    assert sorted(p.name for p in disk.iterdir()) == ["empty", "kept"]
    assert (disk / "kept").read_bytes() == b"synced"
    assert (disk / "empty").read_bytes() == b""
    assert not os.path.ismount(mnt)


def test_posix_rename_needs_both_directories_synced(disk, tmp_path):
    mnt = tmp_path / "mnt"
    with lazyfs.mounted(disk, mnt, "posix"):
        (mnt / "a").mkdir()
        (mnt / "b").mkdir()
        write(mnt / "a" / "f", b"one", sync=True)
        fsync_path(mnt / "a")
        fsync_path(mnt)
        # the atomic-replace recipe, but only the destination directory synced
        write(mnt / "a" / "f.tmp", b"two", sync=True)
        os.replace(mnt / "a" / "f.tmp", mnt / "b" / "f")
        os.unlink(mnt / "a" / "f")
        fsync_path(mnt / "b")
    assert (disk / "a" / "f").read_bytes() == b"one"  # its unlink was never synced
    assert (disk / "b" / "f").read_bytes() == b"two"
    assert not (disk / "a" / "f.tmp").exists()  # never durable


def test_an_unlinked_open_file_and_truncating_opens(disk, tmp_path):
    mnt = tmp_path / "mnt"
    with lazyfs.mounted(disk, mnt, "posix"):
        write(mnt / "t", b"long content", sync=True)
        fsync_path(mnt)
        with open(mnt / "t", "wb") as f:  # O_TRUNC, then O_APPEND writes
            f.write(b"short")
        with open(mnt / "t", "ab") as f:
            f.write(b"+tail")
        assert (mnt / "t").read_bytes() == b"short+tail"
        fd = os.open(mnt / "gone", os.O_RDWR | os.O_CREAT)
        try:
            os.write(fd, b"still readable")
            os.unlink(mnt / "gone")
            os.ftruncate(fd, 5)
            assert os.pread(fd, 100, 0) == b"still"
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_path(mnt)
    assert sorted(p.name for p in disk.iterdir()) == ["t"]
    assert (disk / "t").read_bytes() == b"long content"  # the rewrite was never synced


def test_journal_commits_every_name_at_any_fsync(disk, tmp_path):
    mnt = tmp_path / "mnt"
    with lazyfs.mounted(disk, mnt, "journal"):
        (mnt / "d").mkdir()
        write(mnt / "d" / "x", b"data never synced", sync=False)
        write(mnt / "y", b"synced", sync=True)  # commits the journal: d, d/x, y
        write(mnt / "z", b"after the last fsync", sync=False)
    assert (disk / "d" / "x").read_bytes() == b""
    assert (disk / "y").read_bytes() == b"synced"
    assert not (disk / "z").exists()


def test_a_durable_tree_survives_a_remount(disk, tmp_path):
    mnt = tmp_path / "mnt"
    (disk / "old").mkdir()
    (disk / "old" / "f").write_bytes(b"from the last boot")
    with lazyfs.mounted(disk, mnt, "posix"):
        assert (mnt / "old" / "f").read_bytes() == b"from the last boot"
        os.rename(mnt / "old", mnt / "new")
        write(mnt / "new" / "g", b"g", sync=True)
        fsync_path(mnt / "new")
        fsync_path(mnt)
    assert sorted(str(p.relative_to(disk)) for p in disk.rglob("*")) == ["new", "new/f", "new/g"]
    assert (disk / "new" / "f").read_bytes() == b"from the last boot"


SQLITE_WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute(f"PRAGMA synchronous={sys.argv[2]}")
db.execute("CREATE TABLE t (x)")
for i in range(200):
    db.execute("INSERT INTO t VALUES (?)", (i,))
# a second process reads through the -shm wal-index the first one mmapped
import subprocess
n = subprocess.run([sys.executable, "-c", "import sqlite3, sys; "
    "print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM t').fetchone()[0])",
    sys.argv[1]], capture_output=True, text=True, check=True).stdout.strip()
print(n, flush=True)
sys.stdin.read()  # hold the DB open until killed: no checkpoint at close
"""


def sqlite_rows_after_power_loss(disk: Path, mnt: Path, synchronous: str) -> int:
    with lazyfs.mounted(disk, mnt, "posix"):
        child = subprocess.Popen(
            [sys.executable, "-c", SQLITE_WRITER, str(mnt / "db"), synchronous],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen = child.stdout.readline().strip()
        child.kill()
        _, err = child.communicate()
        assert seen == b"200", err.decode()
    try:
        return sqlite3.connect(disk / "db").execute("SELECT count(*) FROM t").fetchone()[0]
    except sqlite3.OperationalError:  # no such table: the DB itself is gone
        return 0


def test_sqlite_wal_keeps_every_committed_row(disk, tmp_path):
    """SQLite syncs the directory after creating its WAL and the WAL at each commit."""
    assert sqlite_rows_after_power_loss(disk, tmp_path / "mnt", "FULL") == 200


def test_sqlite_without_sync_loses_rows(disk, tmp_path):
    """The same with ``synchronous=OFF``: a SIGKILL keeps every row, a power cut does not."""
    assert sqlite_rows_after_power_loss(disk, tmp_path / "mnt", "OFF") < 200


def test_a_failing_body_still_powers_off_and_unmounts(disk, tmp_path):
    mnt = tmp_path / "mnt"
    with pytest.raises(RuntimeError, match="boom"), lazyfs.mounted(disk, mnt) as fs:
        write(mnt / "f", b"x", sync=False)
        raise RuntimeError("boom")
    assert fs.proc.poll() is not None
    assert not os.path.ismount(mnt)
    assert list(disk.iterdir()) == []


def test_the_state_refuses_an_unknown_model(disk):
    with pytest.raises(ValueError, match="unknown model"):
        lazyfs.LazyState(disk, "ext9")
