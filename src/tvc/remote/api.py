"""``tvc.Registry.clone``, ``.push``, ``.pull``, ``.fetch``: the Python face of the remote layer,
mixed into the public ``tvc.Registry``."""

from __future__ import annotations

import contextlib
import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvc.remote import sync

LAZY_MARK = "lazy.json"  # tvc.remote.lazy.LAZY_FILE: checked without importing that module


class _Lazy:
    """``sync`` loaded on first use: every command opens a Registry, few of them transfer."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("tvc.remote.sync"), name)


sync = _Lazy()  # the module itself for type checkers


class RemoteMixin:
    dir: Any

    @classmethod
    def clone(
        cls,
        src: str | os.PathLike[str],
        dest: str | os.PathLike[str],
        *,
        models: list[str] | tuple[str, ...] = (),
        token: str | None = None,
        lazy: bool = False,
        progress: Any = None,
    ):
        """A new registry at ``dest`` holding every version, branch and tag of ``src`` (a
        registry path or a server URL), with ``origin`` pointing at it. ``lazy``: metadata
        only; chunks are fetched when read (see :mod:`tvc.remote.lazy`)."""
        _t, repo = sync.clone(
            str(src), dest, models=models, token=token, lazy=lazy, progress=progress
        )
        repo.close()
        return cls(dest)

    def _remote(self, remote: str | None, token: str | None):
        from tvc.remote.config import remote_url
        from tvc.remote.transport import open_transport

        return open_transport(remote_url(self.dir, remote), token)

    def push(
        self,
        remote: str | None = None,
        *specs: str,
        all: bool = False,
        force: bool = False,
        token: str | None = None,
        progress: Any = None,
    ) -> sync.Transfer:
        """Push ``MODEL[@BRANCH]`` specs (default: every branch) to ``remote`` (default origin)."""
        with self._remote(remote, token) as rem:
            return sync.push(self, rem, list(specs), all_=all, force=force, progress=progress)

    def pull(
        self,
        remote: str | None = None,
        *specs: str,
        force: bool = False,
        token: str | None = None,
        progress: Any = None,
    ) -> sync.Transfer:
        """Fetch from ``remote`` and fast-forward local branches to its."""
        with self._remote(remote, token) as rem:
            return sync.pull(self, rem, list(specs), force=force, progress=progress)

    def fetch(
        self, remote: str | None = None, *specs: str, token: str | None = None, progress: Any = None
    ) -> sync.Transfer:
        """Bring ``remote``'s versions here without moving local branches."""
        with self._remote(remote, token) as rem:
            return sync.fetch(self, rem, list(specs), progress=progress)

    # -- lazy clones: the chunk store fetches what a read needs first ------------------------
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if (self.dir / LAZY_MARK).exists():  # a stat, not the remote layer's imports
            from tvc.remote.lazy import LazyChunkStore, lazy_remote

            if lazy_remote(self.dir) is not None:
                self.store = LazyChunkStore(self.store, self)

    def commit(self, *args: Any, **kw: Any):
        """A commit in a lazy clone deduplicates against what is here (see
        ``LazyChunkStore.local_lookups``)."""
        local = getattr(self.store, "local_lookups", None)
        with local() if local is not None else contextlib.nullcontext():
            return super().commit(*args, **kw)

    def fill(self, ref: str) -> sync.Transfer:
        """Fetch every chunk of ``ref`` a lazy clone lacks (``tvc fetch --fill``)."""
        from tvc.remote.lazy import fill

        version = self.resolve(ref)
        ids = [c for fe in version.files for c, _n in self.manifest(fe.manifest_id).chunks]
        return fill(self, ids)
