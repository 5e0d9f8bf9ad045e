"""Lazy clones: the metadata now, the chunks when they are read.

``clone --lazy`` copies versions, manifests, refs and history but no chunk; the registry is
marked lazy (``.tvc/lazy.json`` names the remote), and its chunk store is a :class:`LazyChunkStore`:
reading a file (``read``, ``cat``), a tensor (``open(ref).tensor(name)``), checking files out or
diffing first fetches, verifies and keeps exactly the chunks (and delta bases) those bytes need
and this registry lacks; ``fill(ref)`` fetches a whole version. Everything fetched is an
ordinary indexed object from then on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from tvc.remote import objects
from tvc.remote.sync import Transfer, fetch_objects
from tvc.remote.transport import open_transport
from tvc.repo.files import NoProgress
from tvc.store import durable
from tvc.store.chunkstore import ChunkStore

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
        fetch_objects(repo, remote, rows, t, progress or NoProgress())
    return t


class LazyChunkStore(ChunkStore):
    """The chunk store of a lazy clone: a read of chunks this registry lacks fetches them (and
    their delta bases) from the remote first — for every reader above it: files, tensors,
    checkout, diff, blame, merge."""

    def __init__(self, store: ChunkStore, repo, token: str | None = None) -> None:
        super().__init__(store.backend, store.engine, store.staging, store.workers)
        self._repo = repo
        self._token = token  # None: TVC_TOKEN or the login stored for the remote

    _local = 0  # > 0 while a commit looks chunks up to deduplicate

    @contextlib.contextmanager
    def local_lookups(self) -> Iterator[None]:
        """While a commit asks which of its chunks are stored, ask only this registry: a
        chunk it lacks is stored again here (and a push finds the remote has it), instead of
        fetching it to learn that — and a new chunk is not asked of the remote at all (a
        server answers 404 for an object it does not have)."""
        self._local += 1
        try:
            yield
        finally:
            self._local -= 1

    def infos(self, ids, *, with_bases: bool = False):
        ids = list(ids)
        if not self._local:
            fill(self._repo, ids, token=self._token)
        return super().infos(ids, with_bases=with_bases)

    def read_many(self, ids: list[str], known=None):
        ids = list(ids)
        if known is None or any(i not in known for i in ids):  # known: fetched by infos()
            fill(self._repo, ids, token=self._token)
        return super().read_many(ids, known)

    def read(self, cid, info=None, known=None, **kw):
        if info is None and not (known and cid in known) and self.info(cid) is None:
            fill(self._repo, [cid], token=self._token)
        return super().read(cid, info, known, **kw)
