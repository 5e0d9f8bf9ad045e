"""Where packs live. See :mod:`tvc.store.backends.base` for the interface."""

from __future__ import annotations

from pathlib import Path

from tvc.errors import UsageError
from tvc.store.backends.base import Backend, check_name
from tvc.store.backends.local import LocalBackend
from tvc.store.backends.memory import MemoryBackend

__all__ = ["Backend", "LocalBackend", "MemoryBackend", "check_name", "open_backend"]


def open_backend(url: str, base: str | Path | None = None) -> Backend:
    """A backend from a store URL: a path (relative ones under ``base``) or ``file://PATH``
    (local directory), ``memory://`` (tests). Any other scheme is refused, never taken for a
    directory name (``s3://b`` must not become a local directory ``s3:``)."""
    if url.startswith("memory://"):
        return MemoryBackend()
    if url.startswith("file://"):
        url = url[len("file://") :]
        if not url:
            raise UsageError("store URL file:// names no directory")
    elif "://" in url or (url.split("/", 1)[0].endswith(":") and len(url.split(":")[0]) > 1):
        scheme = url.split(":", 1)[0]
        if scheme == "s3":
            raise UsageError("store URL s3://…: the S3 backend is not available in this build")
        raise UsageError(f"unknown store URL scheme {scheme!r}: use a path or file://PATH")
    path = Path(url)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return LocalBackend(path)
