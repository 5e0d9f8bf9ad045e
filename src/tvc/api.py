"""The public Python API: ``tvc.Registry`` reads like the CLI.

It sits at the top of the layer stack (beside the CLI) because it gathers every layer below:
versions (repo), lifecycle/aliases/search (registry), diff/blame/merge (analysis) and, later,
push/pull/clone (remote).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tvc.registry import ModelRegistry
from tvc.remote.api import RemoteMixin
from tvc.remote.client import RemoteClient
from tvc.repo.repository import Progress, Repository

if TYPE_CHECKING:
    from tvc.analysis import Blame, Diff, MergeResult

# The analysis layer is imported inside the methods that use it: commit and checkout, the
# commands run most, do not pay for loading it.


class Registry(RemoteMixin, ModelRegistry):
    """``Registry.init(path)``, ``Registry(path)``, then commit / log / show / checkout / open …

    ``Registry(URL)`` (an ``http(s)://`` server, or ``TVC_REGISTRY=URL`` with no path) is a
    :class:`RemoteRegistry`: the same methods, run against the server (SVN mode)."""

    def __new__(cls, path: str | os.PathLike[str] | None = None, *args: object, **kw: object):
        if cls is Registry:
            where = path if path is not None else os.environ.get("TVC_REGISTRY")
            if isinstance(where, str) and where.startswith(("http://", "https://")):
                return super().__new__(RemoteRegistry)
        return super().__new__(cls)

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".", **where: str | None) -> Registry:
        """Create a registry at ``path``; ``store=URL``/``metadata=URL`` put its packs or its
        metadata DB elsewhere (default: local packs, SQLite in ``.tvc/``)."""
        Repository.init(path, **where).close()
        return cls(path)

    # -- analysis: diff, blame, merge ------------------------------------------------------
    def diff(
        self,
        a: str,
        b: str,
        *,
        path: str | None = None,
        stats: bool = True,
        progress: Progress | None = None,
    ) -> Diff:
        """Compare two versions (of one model or two): files, tensors, params, metrics.

        Unchanged tensors are found from manifests without reading them; changed ones are read
        one at a time, block by block. ``stats=False`` skips reading them (statuses only).
        """
        from tvc.analysis import diff_versions

        return diff_versions(
            self, self.resolve(a), self.resolve(b), path=path, stats=stats, progress=progress
        )

    def blame(self, ref: str, path: str | None = None) -> Blame:
        """For each tensor (and file) of ``ref``, the version that last changed it."""
        from tvc.analysis import blame_version

        return blame_version(self, self.resolve(ref), path)

    def merge(
        self,
        a: str,
        b: str,
        *,
        strategy: str,
        message: str | None = None,
        lambda_a: float = 1.0,
        lambda_b: float = 1.0,
        branch: str | None = None,
        ancestor: str | None = None,
        file_strategy: str | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> MergeResult:
        """Merge ``b`` into ``a``'s branch: a version with parents [a, b] (``.commit``).

        ``strategy``: average | task-arithmetic | ours | theirs. The branch is ``branch``, the
        one ``a`` names, or the only branch whose head is ``a``. Unresolvable conflicts raise
        ``ConflictError`` and commit nothing.
        """
        from tvc.analysis import merge_versions
        from tvc.analysis.merge import target_branch

        va, vb = self.resolve(a), self.resolve(b)
        return merge_versions(
            self,
            va,
            vb,
            strategy=strategy,
            branch=target_branch(self, a, va, branch),
            message=message,
            lambda_a=lambda_a,
            lambda_b=lambda_b,
            ancestor=self.resolve(ancestor) if ancestor else None,
            file_strategy=file_strategy,
            dry_run=dry_run,
            progress=progress,
        )


class RemoteRegistry(RemoteClient, Registry):
    """``tvc.Registry(URL)``: a ``tvc server`` used directly (see :mod:`tvc.remote.client`)."""
