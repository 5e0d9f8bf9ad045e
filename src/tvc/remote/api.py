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
        progress: Any = None,
    ):
        """A new registry at ``dest`` holding every version, branch and tag of ``src`` (a
        registry path or a server URL), with ``origin`` pointing at it."""
        _t, repo = sync.clone(str(src), dest, models=models, token=token, progress=progress)
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
