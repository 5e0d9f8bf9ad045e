"""A module imported on first use, then bound for real in its user's globals.

Why: importing numpy costs a cold ``tvc`` process 60-80 ms here, and commits of small text or
config files, ``log`` and ``show`` never touch it. ``np = lazy_module("numpy", globals(), "np")``
defers the import to the first attribute read; that read rebinds the global name to the real
module, so every later use is a plain global lookup, with no proxy in the hot loops.
"""

from __future__ import annotations

import importlib
from typing import Any


class _Deferred:
    __slots__ = ("_module", "_name", "_namespace")

    def __init__(self, module: str, namespace: dict[str, Any], name: str) -> None:
        self._module = module
        self._namespace = namespace
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        real = importlib.import_module(self._module)
        self._namespace[self._name] = real
        return getattr(real, attr)

    def __repr__(self) -> str:
        return f"<{self._module}, imported on first use>"


def lazy_module(module: str, namespace: dict[str, Any], name: str) -> Any:
    """A stand-in for ``module`` that ``namespace[name]`` holds until its first use."""
    return _Deferred(module, namespace, name)
