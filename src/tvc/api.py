"""The public Python API: ``tvc.Registry`` reads like the CLI.

It sits at the top of the layer stack (beside the CLI) because it gathers every layer below:
versions (repo), lifecycle/aliases/search (registry), diff/blame/merge (analysis) and, later,
push/pull/clone (remote).
"""

from __future__ import annotations

import os

from tvc.registry import ModelRegistry
from tvc.repo.repository import Repository


class Registry(ModelRegistry):
    """``Registry.init(path)``, ``Registry(path)``, then commit / log / show / checkout / open …"""

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".") -> Registry:
        Repository.init(path).close()
        return cls(path)
