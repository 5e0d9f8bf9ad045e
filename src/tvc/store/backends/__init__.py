"""Where packs live. See :mod:`tvc.store.backends.base` for the interface."""

from tvc.store.backends.base import Backend, check_name
from tvc.store.backends.local import LocalBackend
from tvc.store.backends.memory import MemoryBackend

__all__ = ["Backend", "LocalBackend", "MemoryBackend", "check_name", "open_backend"]


def open_backend(url: str) -> Backend:
    """A backend from a URL: a plain path or ``file://`` (local), ``memory://``."""
    if url.startswith("memory://"):
        return MemoryBackend()
    if url.startswith("file://"):
        url = url[len("file://") :]
    return LocalBackend(url)
