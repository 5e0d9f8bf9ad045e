"""Helpers shared by tests (imported by name; ``tests`` is on sys.path)."""

from __future__ import annotations

from pathlib import Path


def corrupt_one_pack(objects: Path, where: float = 0.5) -> Path:
    """Flip every bit of one byte (``^ 0xFF``) in the largest pack, past its magic."""
    packs = sorted(objects.rglob("*.pack"), key=lambda p: p.stat().st_size)
    pack = packs[-1]
    data = bytearray(pack.read_bytes())
    pos = max(100, int(len(data) * where))
    data[pos] ^= 0xFF
    pack.write_bytes(bytes(data))
    return pack


def registry_on(url: str, root: Path):
    """A registry whose metadata lives at ``url`` (packs stay local)."""
    import tvc

    return tvc.Registry.init(root, metadata=url)
