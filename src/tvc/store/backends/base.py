"""The backend interface: deliberately dumb.

A backend stores named immutable objects. It knows nothing of chunks or packs; everything
clever (naming, verification of content, retries, caching) lives above it. Every backend passes
one conformance suite (``tests/store/test_backends.py``). Faults are injected by wrapping a
backend, never by mocking it.

Names are relative POSIX paths of ``[A-Za-z0-9._-]`` segments: no ``..``, no absolute paths, so
a hostile name can never escape a directory backend's root.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from pathlib import Path

from tvc.errors import IntegrityError, StorageError, UsageError
from tvc.store import hashing

_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def check_name(name: str) -> str:
    if not name or len(name) > 1024:
        raise UsageError(f"invalid object name {name!r}")
    for seg in name.split("/"):
        if not _SEGMENT.match(seg) or seg in (".", ".."):
            raise UsageError(f"invalid object name {name!r}")
    return name


class NotFound(StorageError):
    """The object does not exist."""


class Backend(abc.ABC):
    """Immutable named objects. ``put`` is atomic: afterwards the object is whole or absent."""

    def put(self, name: str, data: bytes | Path, *, expected: str | None = None) -> None:
        """Store ``data`` (bytes, or a file whose bytes to take) under ``name``.

        With ``expected`` (a BLAKE3 hex digest) the content is verified first; a mismatch raises
        IntegrityError and leaves nothing behind.
        """
        check_name(name)
        if expected is not None:
            actual = _digest_of(data)
            if actual != expected:
                raise IntegrityError(
                    f"refusing to store {name}: content hashes to {actual[:16]}…, "
                    f"expected {expected[:16]}…"
                )
        self._put(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of ``name`` from ``offset``; ``length`` None means to the end.

        A range beyond the end of the object raises IntegrityError: the caller's index promised
        bytes that are not there.
        """
        check_name(name)
        if offset < 0 or (length is not None and length < 0):
            raise UsageError(f"invalid range {offset}+{length} for {name}")
        data = self._get(name, offset, length)
        if length is not None and len(data) != length:
            raise IntegrityError(
                f"{name}: expected {length} bytes at offset {offset}, found {len(data)} (truncated)"
            )
        return data

    def exists(self, name: str) -> bool:
        return self._exists(check_name(name))

    def size(self, name: str) -> int:
        return self._size(check_name(name))

    def mtime(self, name: str) -> float:
        """When ``name`` was written (seconds since the epoch, the backend's clock): gc keeps
        unindexed objects younger than its grace period, since a writer may be about to index
        them."""
        return self._mtime(check_name(name))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Names under ``prefix`` (a directory-like prefix ending in '/' or empty), any order."""
        if prefix:
            check_name(prefix.rstrip("/"))
        return self._list(prefix)

    def delete(self, name: str) -> None:
        """Remove ``name``; removing an absent object is not an error (gc may race a crash)."""
        self._delete(check_name(name))

    def local_path(self, name: str) -> Path | None:
        """A filesystem path holding ``name``, for backends that have one (fast paths only)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    def _put(self, name: str, data: bytes | Path) -> None: ...

    @abc.abstractmethod
    def _get(self, name: str, offset: int, length: int | None) -> bytes: ...

    @abc.abstractmethod
    def _exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def _size(self, name: str) -> int: ...

    @abc.abstractmethod
    def _mtime(self, name: str) -> float: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> Iterator[str]: ...

    @abc.abstractmethod
    def _delete(self, name: str) -> None: ...


def _digest_of(data: bytes | Path) -> str:
    if isinstance(data, Path):
        h = hashing.hasher()
        with open(data, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        return h.hexdigest()
    return hashing.digest(data)
