"""Content names: every chunk, pack, manifest and version is named by a BLAKE3 hex digest."""

from __future__ import annotations

import blake3


def digest(data: bytes | bytearray | memoryview) -> str:
    """Hex BLAKE3 of ``data``. Releases the GIL: callers hash on their own worker threads (one
    thread per call; blake3's own thread pool measured slower here, on top of the workers)."""
    return blake3.blake3(data).hexdigest()


def hasher() -> blake3.blake3:
    return blake3.blake3()
