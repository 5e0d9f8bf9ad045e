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
    (local directory), ``memory://`` (tests), ``s3://BUCKET[/PREFIX]?endpoint=URL[&region=R]``
    (:mod:`tvc.store.backends.s3`; boto3 is imported only then). Any other scheme is refused,
    never taken for a directory name (``s3://b`` must not become a local directory ``s3:``)."""
    if url.startswith("memory://"):
        return MemoryBackend()
    if url.startswith("s3://"):
        from tvc.store.backends.s3 import S3Backend

        return S3Backend(url)
    if url.startswith("file://"):
        url = url[len("file://") :]
        if not url:
            raise UsageError("store URL file:// names no directory")
    elif "://" in url or (url.split("/", 1)[0].endswith(":") and len(url.split(":")[0]) > 1):
        scheme = url.split(":", 1)[0]
        raise UsageError(f"unknown store URL scheme {scheme!r}: use a path or file://PATH")
    path = Path(url)
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return LocalBackend(path)
