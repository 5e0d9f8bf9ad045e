"""Content names: every chunk, pack, manifest and version is named by a BLAKE3 hex digest."""

from __future__ import annotations

import re

import blake3

HEX_LEN = 64
_HEX = re.compile(r"^[0-9a-f]{64}$")

# blake3 hashes big buffers on several threads; below this it is not worth waking them.
_MT_THRESHOLD = 1 << 20


def digest(data: bytes | bytearray | memoryview) -> str:
    """Hex BLAKE3 of ``data``. Releases the GIL, so callers may hash on several threads."""
    if len(data) >= _MT_THRESHOLD:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    return blake3.blake3(data).hexdigest()


def hasher() -> blake3.blake3:
    return blake3.blake3()


def is_digest(text: str) -> bool:
    return bool(_HEX.match(text))
