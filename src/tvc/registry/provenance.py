"""What a version was made from, recorded at commit: the code commit and the data sets.

*Code*: when the working directory (else the first committed path) lies in a git work tree, the
commit records ``{"commit": sha, "dirty": bool, "branch": name | None, "remote": url | None}``
— found with a few quick ``git`` calls; no git, no repository or a repository without commits
records nothing and never fails the commit. ``dirty`` counts changes to tracked files only (the
model output itself is usually untracked). Credentials in the remote URL are dropped.

*Data sets*: ``NAME=PATH`` is recorded by content hash and size (BLAKE3 over the files, and
their relative names for a directory); ``NAME=MODEL@REF`` of this registry by version; anything
else as an opaque id. ``--store-dataset`` also versions the data in the same store as the model
``datasets/NAME``: unchanged data reuses that model's head version, changed data becomes its
next version, and dedup keeps re-committed bytes free.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tvc.errors import UsageError
from tvc.repo import paths
from tvc.store import hashing

DATASET_NAMESPACE = "datasets"
_GIT_TIMEOUT = 5.0


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _strip_credentials(url: str) -> str:
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url)


def git_code_info(where: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The git commit ``where`` is in, or None (not in a work tree, no commit, no git)."""
    path = Path(where)
    cwd = path if path.is_dir() else path.parent
    if not cwd.is_dir():
        return None
    if not _maybe_in_work_tree(cwd):
        return None
    # One `git status` says the commit, the branch and whether tracked files changed (each git
    # process costs a commit 2-3 ms; this used to take three).
    status = _git(cwd, "status", "--porcelain=v2", "--branch", "--untracked-files=no")
    if status is None:
        return None
    head = branch = None
    dirty = False
    for line in status.splitlines():
        if line.startswith("# branch.oid "):
            head = line.removeprefix("# branch.oid ")
        elif line.startswith("# branch.head "):
            branch = line.removeprefix("# branch.head ")
        elif not line.startswith("#"):
            dirty = True
    if not head or not re.fullmatch(r"[0-9a-f]{40,64}", head):
        return None  # no commit yet: "(initial)"
    remote = _git(cwd, "config", "--get", "remote.origin.url")
    return {
        "commit": head,
        "dirty": dirty,
        "branch": branch if branch and branch != "(detached)" else None,
        "remote": _strip_credentials(remote) if remote else None,
    }


def _maybe_in_work_tree(directory: Path) -> bool:
    """False when git could not find a repository from ``directory``: no ``.git`` (directory,
    or file of a worktree or submodule) at or above it and no ``GIT_DIR``. Saves a commit
    outside any repository its ``git`` processes; git's own search is never wider than this."""
    if "GIT_DIR" in os.environ:
        return True
    return any(os.path.lexists(d / ".git") for d in (directory, *directory.parents))


def detect_code(paths: list[str | os.PathLike[str]]) -> dict[str, Any] | None:
    """Code info for a commit: the working directory's repository, else the first path's."""
    cwd = Path.cwd()
    for i, where in enumerate([cwd, *(Path(p).absolute() for p in paths[:1])]):
        if i and (where if where.is_dir() else where.parent) == cwd:
            break  # the working directory again: its answer was None
        info = git_code_info(where)
        if info:
            return info
    return None


def check_values(values: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Params and metrics are JSON objects with string keys and finite numbers: NaN or inf
    would make the stored JSON invalid for the DB's JSON functions (search, gates)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise UsageError(f"{what} must be a mapping of names to values")
    for k, v in values.items():
        if not isinstance(k, str) or not k or '"' in k or any(ord(c) < 32 for c in k):
            raise UsageError(f"{what}: invalid key {k!r} (non-empty, no '\"' or control chars)")
        _check_finite(v, f"{what} {k}")
    return dict(values)


def _check_finite(v: Any, where: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise UsageError(f"{where}: {v} is not a finite number (not representable in JSON)")
    if isinstance(v, Mapping):
        for k, x in v.items():
            _check_finite(x, f"{where}.{k}")
    elif isinstance(v, list | tuple):
        for x in v:
            _check_finite(x, where)


def hash_dataset(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(record, {stored path: BLAKE3}) of a data set file or directory.

    The files are those a commit of ``path`` would take; the record's digest is one BLAKE3 over
    them in name order, each preceded by its relative name when ``path`` is a directory.
    """
    whole, size = hashing.hasher(), 0
    per_file: dict[str, str] = {}
    items = paths.collect([path])
    for rel, f in items:
        if path.is_dir():
            whole.update(rel.encode())
        one = hashing.hasher()
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                whole.update(block)
                one.update(block)
                size += len(block)
        per_file[rel] = one.hexdigest()
    record = {"path": str(path), "digest": whole.hexdigest(), "size": size, "files": len(items)}
    return record, per_file
