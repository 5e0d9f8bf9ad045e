"""Which files a commit takes, and where a checkout may write: path safety in one place.

A version is a snapshot of exactly the paths given to ``commit``: a directory contributes its
contents (paths relative to it), a file contributes itself under its own name. Nothing may escape:
symlinks pointing outside a committed directory, and stored paths with ``..`` or a leading ``/``
(from a hostile remote) are refused before anything is read or written.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from tvc.errors import PathError, UsageError

SKIP_DIRS = {".tvc", ".git"}

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


def _check_regular(path: Path, shown: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise PathError(f"{shown}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise PathError(f"{shown}: not a regular file")


def as_list(paths: PathArgs) -> list[str | os.PathLike[str]]:
    """One path or several: ``commit("m", "out/")`` must not iterate the string's characters."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        return [paths]
    return list(paths)


def collect(paths: PathArgs) -> list[tuple[str, Path]]:
    """(stored path, file on disk) for every file the given paths contribute, sorted."""
    paths = as_list(paths)
    if not paths:
        raise UsageError("nothing to commit: give at least one file or directory")
    found: dict[str, Path] = {}

    def add(rel: str, full: Path) -> None:
        check_stored_path(rel)
        if rel in found:
            raise UsageError(f"two inputs both contribute {rel!r}")
        found[rel] = full

    for given in paths:
        src = Path(given)
        if not src.exists():
            kind = "broken symlink" if src.is_symlink() else "no such file or directory"
            raise PathError(f"{given}: {kind}")
        if src.is_dir():
            _walk(src, add)
        else:
            _check_regular(src, str(given))
            add(src.name, src)
    return sorted(found.items())


def _walk(top: Path, add) -> None:
    root = top.resolve()
    seen: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if not real.is_relative_to(root):
            raise PathError(f"{here}: symlink points outside {top}")
        if real in seen:
            raise PathError(f"{here}: symlink loop")
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            full = here / name
            shown = str(full)
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(root):
                    raise PathError(f"{shown}: symlink points outside {top}")
            _check_regular(full, shown)
            add(full.relative_to(top).as_posix(), full)


def destination(dest: Path, stored: str) -> Path:
    """Where ``stored`` goes under ``dest``; refuses anything that would land outside it."""
    check_stored_path(stored)
    target = dest / stored
    root = dest.resolve()
    parent = target.parent.resolve()
    if not parent.is_relative_to(root):
        raise PathError(f"{stored}: would be written outside {dest} (through a symlink)")
    return target
