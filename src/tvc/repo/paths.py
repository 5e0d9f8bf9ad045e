"""Which files a commit takes, and where a checkout may write: path safety in one place.

A version is a snapshot of exactly the paths given to ``commit``: a directory contributes its
contents (paths relative to it), a file contributes itself under its own name. Nothing may escape:
symlinks pointing outside a committed directory, and stored paths with ``..`` or a leading ``/``
(from a hostile remote) are refused before anything is read or written.

Not even while the tree changes: a committed directory is listed through directory descriptors
(:func:`listing`), its symlinks resolved by tvc step by step beneath it, and each file is then
reopened the same way without following any symlink and checked to be the very file listed
(:func:`open_listed`); :func:`unchanged` refuses a file whose size, mtime or ctime moved while
it was read. Every such refusal is a ``PathError`` (exit 7) naming the file. Checkout writes
through :func:`open_beneath` likewise (:mod:`tvc.repo.worktree`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tvc.errors import PathError, UsageError

SKIP_DIRS = {".tvc", ".git"}
# What a checkout keeps in its destination (tvc.repo.worktree): never committed, at any level,
# so a directory checked out into and then committed again holds only the model's files.
CHECKOUT_RECORD = ".tvc-checkout"
CHECKOUT_STAGING_PREFIX = ".tvc-tmp-"


def is_checkout_bookkeeping(name: str) -> bool:
    return name == CHECKOUT_RECORD or name.startswith(CHECKOUT_STAGING_PREFIX)


# What commit accepts: one file or directory, or several.
PathArgs = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def check_stored_path(path: str) -> str:
    """A path as stored in a version: relative, POSIX, no ``..``, no empty parts."""
    p = PurePosixPath(path)
    if (
        not path
        or p.is_absolute()
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise PathError(f"unsafe path {path!r} (absolute, '..' or empty parts)")
    return path


def as_list(paths: PathArgs) -> list[str | os.PathLike[str]]:
    """One path or several: ``commit("m", "out/")`` must not iterate the string's characters."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        return [paths]
    return list(paths)


def collect(paths: PathArgs) -> list[tuple[str, Path]]:
    """(stored path, file on disk) for every file the given paths contribute, sorted.

    For callers that only hash what a commit would take; a commit itself uses :func:`listing`
    and :func:`open_listed`, which never follow a symlink the listing did not check.
    """
    return [(item.rel, Path(item.shown)) for item in listing(paths)]


@dataclass(frozen=True)
class Listed:
    """A file a commit takes, as listed: where it is reached without following symlinks.

    ``top`` is the path given to commit (a directory, or the file itself); ``parts`` are the
    real directory entries from ``top`` to the file (a symlink inside ``top`` is resolved while
    listing, so ``parts`` never crosses one); ``st`` is the file as listed. :func:`open_listed`
    walks ``parts`` again without following anything and checks that it reached this very file.
    """

    rel: str
    shown: str
    top: str
    top_id: tuple[int, int]
    parts: tuple[str, ...]
    st: os.stat_result


def listing(paths: PathArgs) -> list[Listed]:
    """Every file the given paths contribute, sorted by stored path; nothing is read yet.

    A directory is walked by directory descriptors. A symlink inside it is followed only if
    it resolves inside it (resolved component by component, never by the kernel, so a later
    swap cannot redirect it); one pointing outside, a loop, a broken link, a special file or a
    name that is not UTF-8 is a ``PathError``. A directory reached twice through a symlink to a
    sibling contributes its files under both names (a loop is a directory inside itself).
    """
    paths = as_list(paths)
    if not paths:
        raise UsageError("nothing to commit: give at least one file or directory")
    found: dict[str, Listed] = {}
    for given in paths:
        top = os.fspath(given)
        _utf8(top, top)
        try:
            fd = os.open(top, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise _missing(exc, top, Path(top).is_symlink()) from exc
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                items = _Walk(top, fd, st).run()
            elif stat.S_ISREG(st.st_mode):
                name = Path(top).name
                items = [Listed(name, top, top, _ident(st), (), st)]
            else:
                raise PathError(f"{top}: not a regular file")
        finally:
            os.close(fd)
        for item in items:
            check_stored_path(item.rel)
            if item.rel in found:
                raise UsageError(f"two inputs both contribute {item.rel!r}")
            found[item.rel] = item
    return [found[rel] for rel in sorted(found)]


def open_listed(item: Listed) -> int:
    """A read-only descriptor of exactly the file ``item`` lists, reached without a symlink.

    Refuses (``PathError``) a file deleted, or replaced — by another file, a symlink, a
    directory — since it was listed: a concurrent change can fail a commit, never make it
    read something else.
    """
    try:
        top = os.open(item.top, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _changed(exc, item) from exc
    fd = -1
    try:
        if _ident(os.fstat(top)) != item.top_id:
            raise PathError(f"{item.top}: replaced while committing")
        flags = os.O_RDONLY | os.O_NONBLOCK
        fd = open_beneath(top, item.parts, flags) if item.parts else os.dup(top)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or _ident(st) != _ident(item.st):
            raise PathError(f"{item.shown}: replaced while committing")
        good, fd = fd, -1
        return good
    except OSError as exc:
        raise _changed(exc, item) from exc
    finally:
        os.close(top)
        if fd >= 0:
            os.close(fd)


class Opener:
    """:func:`open_listed` for many files in path order: the directory of the last one stays
    open (opened the same way, its top's identity checked), so a file costs one ``openat``.

    A directory kept open is the one listed even if it is renamed or replaced meanwhile, and
    every file is still checked to be the listed one.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.dfd = -1

    def __enter__(self) -> Opener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
        self.dfd, self.key = -1, None

    def open(self, item: Listed) -> int:
        if not item.parts:
            return open_listed(item)  # a file given by name
        key = (item.top, item.top_id, item.parts[:-1])
        fd = -1
        try:
            if key != self.key:
                self.close()
                self.dfd = _open_parent(item)
                self.key = key
            fd = os.open(
                item.parts[-1],
                os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=self.dfd,
            )
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or _ident(st) != _ident(item.st):
                raise PathError(f"{item.shown}: replaced while committing")
            good, fd = fd, -1
            return good
        except OSError as exc:
            raise _changed(exc, item) from exc
        finally:
            if fd >= 0:
                os.close(fd)


def _open_parent(item: Listed) -> int:
    top = os.open(item.top, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if _ident(os.fstat(top)) != item.top_id:
            raise PathError(f"{item.top}: replaced while committing")
        return open_beneath(top, (*item.parts[:-1], "."), NOFOLLOW_DIR)
    finally:
        os.close(top)


def unchanged(item: Listed, before: os.stat_result, after: os.stat_result) -> None:
    """Refuse a file whose size, mtime or ctime moved between two looks (a torn read)."""
    if (before.st_size, before.st_mtime_ns, before.st_ctime_ns) != (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    ):
        raise PathError(f"{item.shown}: file changed while committing; commit it again")


NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_beneath(dfd: int, parts: tuple[str, ...] | list[str], flags: int) -> int:
    """Open ``parts`` below the directory ``dfd`` without following a symlink anywhere.

    Every intermediate entry must be a real directory, the last one is opened with ``flags``
    plus ``O_NOFOLLOW``. A symlink planted at any component makes it fail (``ELOOP`` or
    ``ENOTDIR``), never lead elsewhere.
    """
    cur = dfd
    try:
        for name in parts[:-1]:
            nxt = os.open(name, NOFOLLOW_DIR, dir_fd=cur)
            if cur != dfd:
                os.close(cur)
            cur = nxt
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
    finally:
        if cur != dfd:
            os.close(cur)


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _utf8(name: str, shown: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError(f"{shown!r}: file name is not valid UTF-8; rename it") from None


def _missing(exc: OSError, shown: str, is_link: bool) -> PathError:
    if exc.errno == errno.ENOENT:
        return PathError(f"{shown}: {'broken symlink' if is_link else 'no such file or directory'}")
    if exc.errno == errno.ELOOP:
        return PathError(f"{shown}: symlink loop")
    return PathError(f"{shown}: {exc.strerror or exc}")


def _changed(exc: OSError, item: Listed) -> PathError:
    if exc.errno == errno.ENOENT:
        return PathError(f"{item.shown}: deleted while committing")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return PathError(f"{item.shown}: replaced by a symlink while committing")
    return PathError(f"{item.shown}: {exc.strerror or exc}")


MAX_HOPS = 40  # symlinks resolved for one name, as the kernel's limit


class _Walk:
    """One committed directory, walked by descriptors; symlinks resolved by hand, beneath it."""

    def __init__(self, top: str, fd: int, st: os.stat_result) -> None:
        self.top = top
        self.fd = fd
        self.id = _ident(st)
        self.real = os.path.realpath(top)
        self.items: list[Listed] = []

    def run(self) -> list[Listed]:
        self._dir(self.fd, (), (), {self.id})
        return self.items

    def _shown(self, rel: tuple[str, ...]) -> str:
        return os.path.join(self.top, *rel)

    def _dir(self, dfd: int, rel: tuple[str, ...], real: tuple[str, ...], above: set) -> None:
        try:
            names = sorted(os.listdir(dfd))
        except OSError as exc:
            raise PathError(f"{self._shown(rel)}: {exc.strerror or exc}") from exc
        for name in names:
            if is_checkout_bookkeeping(name):
                continue
            here = (*rel, name)
            shown = self._shown(here)
            _utf8(name, shown)
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError as exc:
                raise _missing(exc, shown, False) from exc
            parts = (*real, name)
            if stat.S_ISLNK(st.st_mode):
                parts, st = self._resolve(real, name, shown)
            if stat.S_ISDIR(st.st_mode):
                if name in SKIP_DIRS:
                    continue
                if _ident(st) in above:
                    raise PathError(f"{shown}: symlink loop (a directory inside itself)")
                try:
                    sub = open_beneath(self.fd, parts, NOFOLLOW_DIR)
                except OSError as exc:
                    raise _missing(exc, shown, False) from exc
                try:
                    if _ident(os.fstat(sub)) != _ident(st):
                        raise PathError(f"{shown}: replaced while committing")
                    self._dir(sub, here, parts, above | {_ident(st)})
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                self.items.append(Listed("/".join(here), shown, self.top, self.id, parts, st))
            else:
                raise PathError(f"{shown}: not a regular file")

    def _resolve(
        self, real: tuple[str, ...], name: str, shown: str
    ) -> tuple[tuple[str, ...], os.stat_result]:
        """The real entries a symlink at ``real/name`` leads to, never leaving the top."""
        at = list(real)
        todo = [name]
        hops = 0
        st = None
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not at:
                    raise PathError(f"{shown}: symlink points outside {self.top}")
                at.pop()
                st = None
                continue
            dfd = open_beneath(self.fd, at, NOFOLLOW_DIR) if at else self.fd
            try:
                st = os.stat(part, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_HOPS:
                        raise PathError(f"{shown}: symlink loop")
                    target = os.readlink(part, dir_fd=dfd)
                    if target.startswith("/"):
                        inside = os.path.relpath(target, self.real)
                        if inside == ".." or inside.startswith("../"):
                            raise PathError(f"{shown}: symlink points outside {self.top}")
                        at = []
                        target = inside
                    todo = target.split("/") + todo
                    st = None
                    continue
            except FileNotFoundError:
                raise PathError(f"{shown}: broken symlink") from None
            except OSError as exc:
                raise PathError(f"{shown}: {exc.strerror or exc}") from exc
            finally:
                if dfd != self.fd:
                    os.close(dfd)
            if todo and not stat.S_ISDIR(st.st_mode):
                raise PathError(f"{shown}: broken symlink (not a directory on the way)")
            at.append(part)
        if st is None:  # the link ends at a directory reached by "..", or at the top itself
            dfd = open_beneath(self.fd, at, NOFOLLOW_DIR) if at else os.dup(self.fd)
            try:
                st = os.fstat(dfd)
            finally:
                os.close(dfd)
        return tuple(at), st


def destination(dest: Path, stored: str) -> Path:
    """Where ``stored`` goes under ``dest``; refuses anything that would land outside it.

    A check before the write, so only for a directory tvc made itself (merge's private staging
    directory): checkout writes through descriptors instead (:mod:`tvc.repo.worktree`).
    """
    check_stored_path(stored)
    target = dest / stored
    root = dest.resolve()
    parent = target.parent.resolve()
    if not parent.is_relative_to(root):
        raise PathError(f"{stored}: would be written outside {dest} (through a symlink)")
    return target
