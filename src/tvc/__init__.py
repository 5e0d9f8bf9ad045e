"""tvc: version control, a model registry and model serving for large AI models.

>>> import tvc
>>> reg = tvc.Registry.init("work")                      # doctest: +SKIP
>>> reg.commit("bert", ["./out"], "baseline", params={"lr": 3e-5})  # doctest: +SKIP
>>> reg.open("bert@v1").tensor("classifier.weight")     # doctest: +SKIP

The names below load on first use, so ``import tvc`` (and every CLI start) stays cheap.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs the CLI 11 ms

__version__ = "0.1.0"
__all__ = ["CommitResult", "Registry", "Version", "VersionReader", "__version__", "errors"]

_LAZY = {
    "Registry": "tvc.api",
    "CommitResult": "tvc.registry",
    "Version": "tvc.registry",
    "VersionReader": "tvc.registry",
    "errors": "tvc.errors",
}

if TYPE_CHECKING:
    from typing import Any

    from tvc import errors
    from tvc.api import Registry
    from tvc.registry import CommitResult, Version, VersionReader


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tvc' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "errors" else getattr(mod, name)
    globals()[name] = value
    return value
