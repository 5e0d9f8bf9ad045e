"""``tvc.Registry.clone``, ``.push``, ``.pull``, ``.fetch``: the Python face of the remote layer,
mixed into the public ``tvc.Registry``."""

from __future__ import annotations

import os
from typing import Any

from tvc.remote import sync
from tvc.remote.config import remote_url
from tvc.remote.transport import open_transport


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

    # -- lazy clones: fetch what a read needs first ------------------------------------------
    def _is_lazy(self) -> bool:
        from tvc.remote.lazy import lazy_remote

        return lazy_remote(self.dir) is not None

    def _fill_files(self, version, paths: list[str] | None = None) -> None:
        from tvc.remote.lazy import fill

        if not version.files and version.size:
            version = self.version(version.id)
        ids = [
            cid
            for fe in version.files
            if paths is None or fe.path in paths
            for cid, _n in self.manifest(fe.manifest_id).chunks
        ]
        fill(self, ids)

    def fill(self, ref: str) -> sync.Transfer:
        """Fetch every chunk of ``ref`` a lazy clone lacks (``tvc fetch --fill``)."""
        from tvc.remote.lazy import fill

        version = self.resolve(ref)
        ids = [c for fe in version.files for c, _n in self.manifest(fe.manifest_id).chunks]
        return fill(self, ids)

    def open(self, ref: str):
        if not self._is_lazy():
            return super().open(ref)
        from tvc.remote.lazy import LazyReader

        return LazyReader(self, self.resolve(ref))

    def iter_file(self, version, path: str):
        if self._is_lazy():
            self._fill_files(version, [path])
        return super().iter_file(version, path)

    def checkout(self, ref: str, dest=None, *, only: list[str] | None = None, **kw: Any):
        if self._is_lazy():
            version = self.resolve(ref)

            def under(p: str) -> bool:
                return not only or any(p == w or p.startswith(w.rstrip("/") + "/") for w in only)

            self._fill_files(version, [fe.path for fe in version.files if under(fe.path)])
        return super().checkout(ref, dest, only=only, **kw)
