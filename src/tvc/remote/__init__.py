"""Remotes: sharing versions between registries — push, pull, fetch, clone.

A remote is another registry directory (a path) or a ``tvc server`` (an ``http(s)://`` URL),
reached through one small :class:`~tvc.remote.transport.Transport`. A version has the same id on
every registry it reaches; what travels are objects (chunks as stored, manifests, version
records) in verified packs, then the metadata operations that record the versions and move
branches by compare-and-swap (:mod:`tvc.remote.record`). Only objects the receiver lacks travel
(:mod:`tvc.remote.objects`); the order and the resume rule are in :mod:`tvc.remote.sync`.
"""

import importlib
from typing import Any

_WHERE = {
    "Transfer": "sync",
    "clone": "sync",
    "fetch": "sync",
    "pull": "sync",
    "push": "sync",
    "HttpTransport": "transport",
    "PathTransport": "transport",
    "Transport": "transport",
    "open_transport": "transport",
}


def __getattr__(name: str) -> Any:  # loaded on first use: opening a registry needs none of it
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tvc.remote' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tvc.remote.{module}"), name)


__all__ = [
    "HttpTransport",
    "PathTransport",
    "Transfer",
    "Transport",
    "clone",
    "fetch",
    "open_transport",
    "pull",
    "push",
]
