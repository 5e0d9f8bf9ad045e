"""Lazy clones: the metadata now, the chunks when they are read.

``clone --lazy`` copies versions, manifests, refs and history but no chunk; the registry is
marked lazy (``.tvc/lazy.json`` names the remote). Reading a file (``read``, ``cat``), a tensor
(``open(ref).tensor(name)``) or checking files out first fetches, verifies and keeps exactly
the chunks (and delta bases) those bytes need and this registry lacks; ``fill(ref)`` fetches a
whole version. Everything fetched is an ordinary indexed object from then on.
"""

from __future__ import annotations

import json
from pathlib import Path

from tvc.remote import objects
from tvc.remote.sync import Transfer, _NoProgress, fetch_objects
from tvc.remote.transport import open_transport
from tvc.repo.reader import VersionReader
from tvc.store import durable

LAZY_FILE = "lazy.json"


def mark_lazy(regdir: Path, where: str) -> None:
    durable.write_bytes(regdir / LAZY_FILE, json.dumps({"remote": where}).encode())


def lazy_remote(regdir: Path) -> str | None:
    try:
        return json.loads((regdir / LAZY_FILE).read_text())["remote"]
    except (OSError, ValueError, KeyError):
        return None


def fill(repo, ids: list[str], *, token: str | None = None, progress=None) -> Transfer:
    """Fetch the objects among ``ids`` (and their delta bases) this registry lacks from the
    remote it was lazily cloned from."""
    where = lazy_remote(repo.dir)
    t = Transfer("fetch", where or "")
    wanted = objects.missing(repo.engine, ids)
    if not wanted or where is None:
        return t
    with open_transport(where, token) as remote:
        rows = remote.object_info(wanted)
        fetch_objects(repo, remote, rows, t, progress or _NoProgress())
    return t


class LazyReader(VersionReader):
    """A version reader that fetches a tensor's chunks before it reads them."""

    def tensor_bytes(self, name: str, path: str | None = None) -> bytes:
        manifest, t = self._find(name, path)
        a, b = manifest.chunk_range(t.offset, t.length)
        fill(self.repo, [cid for cid, _n in manifest.chunks[a:b]])
        return super().tensor_bytes(name, path)
