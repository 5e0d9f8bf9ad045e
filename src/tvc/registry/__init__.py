"""The registry layer: what a model registry adds to versions — lifecycle states with an audit
trail and gates, aliases with history and rollback, lineage, search.

:class:`ModelRegistry` is this layer's API; the public facade ``tvc.Registry`` (in
:mod:`tvc.api`) extends it with the layers above (analysis, remote).
"""

from __future__ import annotations

import os

from tvc.repo.reader import VersionReader
from tvc.repo.repository import CommitResult, Repository
from tvc.repo.version import Version


class ModelRegistry(Repository):
    """Versions plus lifecycle, aliases, lineage and search."""

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".") -> ModelRegistry:
        Repository.init(path).close()
        return cls(path)

    def open(self, ref: str) -> VersionReader:
        """A reader over one version: ``.files``, ``.read(path)``, ``.tensor(name)``."""
        return VersionReader(self, self.resolve(ref))


__all__ = ["CommitResult", "ModelRegistry", "Version", "VersionReader"]
