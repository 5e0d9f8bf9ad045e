"""The registry layer: what a model registry adds to versions — lifecycle states with an audit
trail and gates, aliases with history and rollback, lineage, search.

:class:`Registry` is the Python API users hold; it reads like the CLI.
"""

from __future__ import annotations

import os

from tvc.repo.reader import VersionReader
from tvc.repo.repository import CommitResult, Repository
from tvc.repo.version import Version


class Registry(Repository):
    """A model registry: ``Registry.init(path)``, ``Registry(path)``, then commit/log/show/…"""

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".") -> Registry:
        super().init(path).close()
        return cls(path)

    def open(self, ref: str) -> VersionReader:
        """A reader over one version: ``.files``, ``.read(path)``, ``.tensor(name)``."""
        return VersionReader(self, self.resolve(ref))


__all__ = ["CommitResult", "Registry", "Version", "VersionReader"]
