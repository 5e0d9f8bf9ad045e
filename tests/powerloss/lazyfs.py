"""A FUSE pass-through file system that loses unsynced writes at a simulated power-off.

SIGKILL leaves the kernel's page cache intact, so a crash test built on it cannot see a write
that was never made durable. This file system (the approach of LazyFS) keeps two states:

* the **live** state, what every process sees while the power is on: all writes, truncates,
  creates, renames, unlinks and mkdirs, applied at once and read back at once (unsynced data is
  readable, at any offset);
* the **durable** state, mirrored into the backing directory: only what was made durable.

Power-off is ``os._exit`` of this process while it holds its one lock (so no simulated fsync is
ever half applied): whatever was not durable is gone, and the backing directory is the disk as
it would be found after the reboot. The test opens it directly as a registry.

What makes what durable (``--model``):

``posix`` (default; the strict reading of POSIX that SQLite and careful programs code to)
    * ``fsync``/``fdatasync`` of a file makes that file's *data* durable (content and size,
      as they are in the live state at that moment), nothing else;
    * a namespace operation (create, rename, unlink, mkdir, rmdir) is durable only once its
      directory was fsynced after it; fsyncing a directory makes its entries durable exactly as
      they are live (a rename across directories needs both fsynced: the old name survives
      until its directory is synced, so a file may then be found under both names);
    * a file whose entry became durable before any fsync of its data is found empty (as ext4's
      delayed allocation leaves it); a new directory's own entries need their own fsync.

``journal`` (what ext4 in its default ``data=ordered`` mode guarantees for metadata)
    * namespace operations are journaled in order: any fsync (of a file or a directory)
      commits every namespace operation made so far, in every directory;
    * file data is still durable only through an fsync of that file (ext4 flushes some data
      of other files at a commit; this model never counts on it, so it is the stricter one).

Both keep metadata simple: mode, owner and times are not modelled as durable or not.

SQLite in WAL mode works on it: SQLite fsyncs the directory after it creates the ``-wal`` (and
rollback ``-journal``) file, fsyncs the WAL at each commit (``synchronous=FULL``) and the DB
at a checkpoint, and its ``-shm`` wal-index is shared memory that it ``mmap``s. FUSE supports
shared writable mmaps as long as the file is not opened with ``direct_io`` (this file system
never sets it): the pages live in the kernel's page cache, coherent between the processes on
this machine, and the kernel writes them back here now and then. That is all SQLite needs of
``-shm`` (it rebuilds it from the WAL after a crash, so its durability does not matter). POSIX
advisory locks (``fcntl``) and ``flock`` are not implemented here, so the kernel keeps them
itself, as on a local disk. No ``locking_mode=EXCLUSIVE`` is needed.

Not supported (tvc does not use them): hard links, symlinks, special files, xattrs,
``renameat2`` flags, and ``fstat`` of a file unlinked while open (libfuse's high-level API,
with ``hard_remove``, answers ESTALE; reads, writes, truncates and fsyncs through the handle
work).

Run as a program (``python lazyfs.py [--model posix|journal] BACKING MOUNTPOINT``) it mounts in
the foreground, prints ``READY`` once the kernel has mounted it and powers off on the line
``poweroff`` on its stdin, or when its stdin closes (its parent died). From Python, use
:func:`mounted`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = 1
MODELS = ("posix", "journal")


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Inode:
    """A file or a directory, with its live state and its durable state."""

    __slots__ = (
        "dentries",
        "durable",
        "entries",
        "kind",
        "live",
        "mode",
        "mtime",
        "nlink",
        "opens",
    )

    def __init__(self, kind: str, mode: int) -> None:
        self.kind = kind  # "file" | "dir"
        self.mode = mode
        self.mtime = time.time_ns()
        self.nlink = 0  # live names (no hard links: 0 or 1)
        self.opens = 0  # open handles
        self.live = bytearray()  # file content as processes see it
        self.durable = b""  # file content as the disk has it
        self.entries: dict[str, int] = {}  # directory: live names
        self.dentries: dict[str, int] = {}  # directory: durable names


class LazyState:
    """The two states and every operation on them, without FUSE (so it can be reasoned about).

    ``dlinks[ino]`` is the set of ``(parent, name)`` durable entries that name ``ino``; the
    backing directory holds, at every durable path, the durable content.
    """

    def __init__(self, backing: str | os.PathLike[str], model: str = "posix") -> None:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r} (one of {', '.join(MODELS)})")
        self.backing = Path(backing)
        self.model = model
        self.inodes: dict[int, Inode] = {}
        self.dlinks: dict[int, set[tuple[int, str]]] = {}
        self.next_ino = ROOT
        self.handles: dict[int, int] = {}
        self.next_fh = 1
        self.syncs = 0
        self._load()

    # -- loading the disk -------------------------------------------------------------------
    def _new(self, kind: str, mode: int) -> int:
        ino = self.next_ino
        self.next_ino += 1
        self.inodes[ino] = Inode(kind, mode)
        self.dlinks[ino] = set()
        return ino

    def _load(self) -> None:
        """Everything in the backing directory is durable: it is what the last boot left."""
        root = self._new("dir", stat.S_IFDIR | 0o755)
        self.inodes[root].nlink = 1
        stack = [(root, self.backing)]
        while stack:
            dino, dpath = stack.pop()
            with os.scandir(dpath) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        ino = self._new("dir", st.st_mode)
                        stack.append((ino, Path(e.path)))
                    elif stat.S_ISREG(st.st_mode):
                        ino = self._new("file", st.st_mode)
                        node = self.inodes[ino]
                        node.durable = Path(e.path).read_bytes()
                        node.live = bytearray(node.durable)
                    else:
                        continue
                    node = self.inodes[ino]
                    node.mtime = st.st_mtime_ns
                    node.nlink = 1
                    self.inodes[dino].entries[e.name] = ino
                    self.inodes[dino].dentries[e.name] = ino
                    self.dlinks[ino].add((dino, e.name))

    # -- paths ------------------------------------------------------------------------------
    @staticmethod
    def _split(path: str) -> list[str]:
        return [p for p in path.split("/") if p]

    def lookup(self, path: str) -> int:
        ino = ROOT
        for name in self._split(path):
            node = self.inodes[ino]
            if node.kind != "dir":
                raise _err(errno.ENOTDIR)
            if name not in node.entries:
                raise _err(errno.ENOENT)
            ino = node.entries[name]
        return ino

    def _parent(self, path: str) -> tuple[int, str]:
        parts = self._split(path)
        if not parts:
            raise _err(errno.EBUSY)
        dino = self.lookup("/".join(parts[:-1]))
        if self.inodes[dino].kind != "dir":
            raise _err(errno.ENOTDIR)
        return dino, parts[-1]

    def durable_paths(self, ino: int, _depth: int = 0) -> list[Path]:
        """Where ``ino`` is reachable through durable entries (backing-relative)."""
        if ino == ROOT:
            return [Path()]
        if _depth > 64:  # a cycle made of renamed directories: unreachable from the root
            return []
        out = []
        for parent, name in self.dlinks.get(ino, ()):
            out += [p / name for p in self.durable_paths(parent, _depth + 1)]
        return out

    # -- the live state ---------------------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None) -> dict:
        ino = self.handles[fh] if fh is not None and fh in self.handles else self.lookup(path)
        node = self.inodes[ino]
        size = len(node.live) if node.kind == "file" else 4096
        return {
            "st_mode": node.mode,
            "st_nlink": max(node.nlink, 1 if node.opens else 0) + (node.kind == "dir"),
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": node.mtime,
            "st_mtime": node.mtime,
            "st_ctime": node.mtime,
        }

    def _link(self, dino: int, name: str, ino: int) -> None:
        self.inodes[dino].entries[name] = ino
        self.inodes[ino].nlink += 1
        self.inodes[dino].mtime = time.time_ns()

    def _unlink(self, dino: int, name: str) -> int:
        ino = self.inodes[dino].entries.pop(name)
        self.inodes[ino].nlink -= 1
        self.inodes[dino].mtime = time.time_ns()
        return ino

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        dino, name = self._parent(path)
        if name in self.inodes[dino].entries:
            ino = self.inodes[dino].entries[name]
            if self.inodes[ino].kind == "dir":
                raise _err(errno.EISDIR)
            if flags & os.O_TRUNC:
                self._truncate(ino, 0)
        else:
            ino = self._new("file", stat.S_IFREG | (mode & 0o7777))
            self._link(dino, name, ino)
        return self._open_ino(ino)

    def open(self, path: str, flags: int) -> int:
        ino = self.lookup(path)
        if flags & os.O_TRUNC:
            self._truncate(ino, 0)
        return self._open_ino(ino)

    def opendir(self, path: str) -> int:
        ino = self.lookup(path)
        if self.inodes[ino].kind != "dir":
            raise _err(errno.ENOTDIR)
        return self._open_ino(ino)

    def _open_ino(self, ino: int) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = ino
        self.inodes[ino].opens += 1
        return fh

    def release(self, fh: int) -> None:
        ino = self.handles.pop(fh, None)
        if ino is not None:
            self.inodes[ino].opens -= 1
            self._forget(ino)

    def read(self, fh: int, size: int, offset: int) -> bytes:
        return bytes(self.inodes[self.handles[fh]].live[offset : offset + size])

    def write(self, fh: int, data: bytes, offset: int) -> int:
        node = self.inodes[self.handles[fh]]
        if offset > len(node.live):
            node.live.extend(bytes(offset - len(node.live)))
        node.live[offset : offset + len(data)] = data
        node.mtime = time.time_ns()
        return len(data)

    def truncate(self, path: str | None, length: int, fh: int | None) -> None:
        ino = self.handles[fh] if fh is not None and fh in self.handles else self.lookup(path)
        self._truncate(ino, length)

    def _truncate(self, ino: int, length: int) -> None:
        node = self.inodes[ino]
        if node.kind != "file":
            raise _err(errno.EISDIR)
        if length < len(node.live):
            del node.live[length:]
        else:
            node.live.extend(bytes(length - len(node.live)))
        node.mtime = time.time_ns()

    def mkdir(self, path: str, mode: int) -> None:
        dino, name = self._parent(path)
        if name in self.inodes[dino].entries:
            raise _err(errno.EEXIST)
        self._link(dino, name, self._new("dir", stat.S_IFDIR | (mode & 0o7777)))

    def unlink(self, path: str) -> None:
        dino, name = self._parent(path)
        ino = self.lookup(path)
        if self.inodes[ino].kind == "dir":
            raise _err(errno.EISDIR)
        self._unlink(dino, name)
        self._forget(ino)

    def rmdir(self, path: str) -> None:
        dino, name = self._parent(path)
        ino = self.lookup(path)
        if self.inodes[ino].kind != "dir":
            raise _err(errno.ENOTDIR)
        if self.inodes[ino].entries:
            raise _err(errno.ENOTEMPTY)
        self._unlink(dino, name)
        self._forget(ino)

    def rename(self, old: str, new: str) -> None:
        odino, oname = self._parent(old)
        ndino, nname = self._parent(new)
        ino = self.lookup(old)
        target = self.inodes[ndino].entries.get(nname)
        if target == ino:
            return
        if self.inodes[ino].kind == "dir":
            # moving a directory under itself would cut it off from the root
            p = ndino
            while p != ROOT:
                if p == ino:
                    raise _err(errno.EINVAL)
                p = next(d for d, n in self._live_parents(p))
        if target is not None:
            tnode = self.inodes[target]
            if tnode.kind == "dir" and self.inodes[ino].kind != "dir":
                raise _err(errno.EISDIR)
            if tnode.kind != "dir" and self.inodes[ino].kind == "dir":
                raise _err(errno.ENOTDIR)
            if tnode.kind == "dir" and tnode.entries:
                raise _err(errno.ENOTEMPTY)
            self._unlink(ndino, nname)
        self._unlink(odino, oname)
        self._link(ndino, nname, ino)
        if target is not None:
            self._forget(target)

    def _live_parents(self, ino: int) -> Iterator[tuple[int, str]]:
        for d, node in self.inodes.items():
            if node.kind == "dir":
                for n, child in node.entries.items():
                    if child == ino:
                        yield d, n

    def readdir(self, path: str) -> list[str]:
        node = self.inodes[self.lookup(path)]
        if node.kind != "dir":
            raise _err(errno.ENOTDIR)
        return [".", "..", *node.entries]

    def _forget(self, ino: int) -> None:
        """Drop an inode nothing can reach any more, live or durable."""
        node = self.inodes.get(ino)
        if node is None or ino == ROOT or node.nlink or node.opens or self.dlinks[ino]:
            return
        del self.inodes[ino]
        del self.dlinks[ino]
        for name, child in node.dentries.items():  # a directory's durable entries go with it
            self.dlinks[child].discard((ino, name))
            self._forget(child)

    # -- making things durable --------------------------------------------------------------
    def fsync(self, fh: int) -> None:
        ino = self.handles[fh]
        node = self.inodes[ino]
        if node.kind == "file":
            node.durable = bytes(node.live)
            for rel in self.durable_paths(ino):
                (self.backing / rel).write_bytes(node.durable)
        if node.kind == "dir":
            self._sync_dir(ino)
        if self.model == "journal":
            self._commit_journal()
        self.syncs += 1

    def _sync_dir(self, dino: int) -> None:
        """The directory's durable entries become its live ones; the disk follows."""
        node = self.inodes[dino]
        old, new = node.dentries, dict(node.entries)
        if old == new:
            return
        here = self.durable_paths(dino)
        for name, ino in old.items():
            if new.get(name) != ino:
                self.dlinks[ino].discard((dino, name))
                for p in here:
                    _remove(self.backing / p / name)
        node.dentries = new
        for name, ino in new.items():
            if old.get(name) != ino:
                self.dlinks[ino].add((dino, name))
                for p in here:
                    self._materialize(ino, self.backing / p / name, 0)
        for ino in set(old.values()) - set(new.values()):
            self._forget(ino)

    def _materialize(self, ino: int, dest: Path, depth: int) -> None:
        node = self.inodes[ino]
        if node.kind == "file":
            dest.write_bytes(node.durable)
            return
        dest.mkdir()
        if depth < 64:
            for name, child in node.dentries.items():
                self._materialize(child, dest / name, depth + 1)

    def _commit_journal(self) -> None:
        """Every directory's entries, top down, so a new directory is placed before its files."""
        queue = [ROOT]
        while queue:
            dino = queue.pop(0)
            self._sync_dir(dino)
            queue += [i for i in self.inodes[dino].entries.values() if self.inodes[i].kind == "dir"]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- the FUSE side ----------------------------------------------------------------------------
def _operations(state: LazyState, lock: threading.Lock):
    """mfusepy Operations over ``state``; every call runs under ``lock`` (power-off takes it)."""
    # libfuse 3 even where libfuse 2 is installed too (mfusepy would take 2 first)
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    def locked(fn):
        @functools.wraps(fn)  # mfusepy reads some signatures (create: with or without flags)
        def wrapper(self, *args):
            with lock:
                return fn(self, *args)

        return wrapper

    class Ops(mfusepy.Operations):
        use_ns = True

        def init(self, path):
            print("READY", flush=True)

        @locked
        def getattr(self, path, fh=None):
            return state.getattr(path, fh)

        @locked
        def readdir(self, path, fh):
            return state.readdir(path)

        @locked
        def opendir(self, path):
            return state.opendir(path)

        @locked
        def releasedir(self, path, fh):
            state.release(fh)
            return 0

        @locked
        def create(self, path, mode, flags):
            return state.create(path, mode, flags)

        @locked
        def open(self, path, flags):
            return state.open(path, flags)

        @locked
        def release(self, path, fh):
            state.release(fh)
            return 0

        def flush(self, path, fh):
            return 0

        @locked
        def read(self, path, size, offset, fh):
            return state.read(fh, size, offset)

        @locked
        def write(self, path, data, offset, fh):
            return state.write(fh, data, offset)

        @locked
        def truncate(self, path, length, fh=None):
            state.truncate(path, length, fh)
            return 0

        @locked
        def fsync(self, path, datasync, fh):
            state.fsync(fh)
            return 0

        @locked
        def fsyncdir(self, path, datasync, fh):
            state.fsync(fh)
            return 0

        @locked
        def mkdir(self, path, mode):
            state.mkdir(path, mode)
            return 0

        @locked
        def unlink(self, path):
            state.unlink(path)
            return 0

        @locked
        def rmdir(self, path):
            state.rmdir(path)
            return 0

        @locked
        def rename(self, old, new):
            state.rename(old, new)
            return 0

        @locked
        def chmod(self, path, mode):
            node = state.inodes[state.lookup(path)]
            node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
            return 0

        def chown(self, path, uid, gid):
            return 0

        @locked
        def utimens(self, path, times=None):
            state.inodes[state.lookup(path)].mtime = times[1] if times else time.time_ns()
            return 0

        def access(self, path, amode):
            return 0

        def statfs(self, path):
            st = os.statvfs(state.backing)
            keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files")
            return {k: getattr(st, k) for k in (*keys, "f_ffree", "f_favail", "f_namemax")}

        def link(self, target, source):
            raise _err(errno.EPERM)

        def symlink(self, target, source):
            raise _err(errno.EPERM)

        def mknod(self, path, mode, dev):
            raise _err(errno.EPERM)

    class Fuse(mfusepy.FUSE):
        def rename_fuse_3(self, old, new, flags):
            # mfusepy drops renameat2's flags; refuse them rather than ignore NOREPLACE
            return -errno.EINVAL if flags else self.rename_fuse_2(old, new)

        def truncate_fuse_3(self, path, length, fip):
            # mfusepy drops the handle: an ftruncate of an unlinked open file has no path
            fh = fip.contents.fh if fip else None
            return self.operations.truncate(path and path.decode(), length, fh)

    return Ops(), Fuse


def serve(backing: str, mountpoint: str, model: str) -> None:
    """Mount and serve until power-off (a ``poweroff`` line or EOF on stdin)."""
    state = LazyState(backing, model)
    lock = threading.Lock()
    ops, fuse = _operations(state, lock)

    def power_switch() -> None:
        for line in sys.stdin:
            if line.strip() == "poweroff":
                break
        with lock:  # no fsync half applied; nothing more after this
            os._exit(0)

    threading.Thread(target=power_switch, daemon=True).start()
    fuse(ops, mountpoint, foreground=True, nothreads=True, fsname="lazyfs", hard_remove=True)


# -- the test side ----------------------------------------------------------------------------
def fusermount() -> str:
    found = shutil.which("fusermount3")
    if not found:
        raise RuntimeError("fusermount3 is missing: apt-get install fuse3")
    return found


def unmount(mountpoint: str | os.PathLike[str]) -> None:
    """Detach the mount (lazily: works when the daemon is dead; quiet when not mounted)."""
    subprocess.run(
        [fusermount(), "-u", "-z", "-q", str(mountpoint)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


class Mount:
    """A running lazyfs: ``power_off()`` cuts it; the durable state is left in ``backing``."""

    def __init__(self, backing: Path, mountpoint: Path, model: str) -> None:
        self.backing, self.mountpoint, self.model = Path(backing), Path(mountpoint), model
        # its log goes to a file: a pipe nobody reads would block it once full
        self.log = self.mountpoint.with_name(self.mountpoint.name + ".log")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--model", model, str(backing), str(mountpoint)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        if self.proc.stdout.readline().strip() != b"READY":
            self.proc.kill()
            self.proc.wait()
            unmount(mountpoint)
            raise RuntimeError(f"lazyfs did not mount: {self.messages()}")

    def power_off(self) -> None:
        """Drop everything not durable: stop the file system at once, then detach it."""
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write(b"poweroff\n")
                self.proc.stdin.flush()
            self.proc.wait()
        unmount(self.mountpoint)
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                f.close()

    def messages(self) -> str:
        """What the file system logged (an operation that raised, a failed mount)."""
        return self.log.read_text(errors="replace").strip() if self.log.exists() else ""


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def mounted(
    backing: str | os.PathLike[str], mountpoint: str | os.PathLike[str], model: str = "posix"
) -> Iterator[Mount]:
    """Mount lazyfs over ``backing`` at ``mountpoint``; powered off on exit, whatever happens."""
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    m = Mount(Path(backing), Path(mountpoint), model)
    try:
        yield m
    finally:
        m.power_off()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=MODELS, default="posix")
    ap.add_argument("backing")
    ap.add_argument("mountpoint")
    args = ap.parse_args(argv)
    serve(args.backing, args.mountpoint, args.model)


if __name__ == "__main__":
    main()
