"""Remotes: sharing versions between registries — push, pull, fetch, clone.

A remote is another registry directory (a path) or a ``tvc server`` (an ``http(s)://`` URL),
reached through one small :class:`~tvc.remote.transport.Transport`. A version has the same id on
every registry it reaches; what travels are objects (chunks as stored, manifests, version
records) in verified packs, then the metadata operations that record the versions and move
branches by compare-and-swap (:mod:`tvc.remote.record`). Only objects the receiver lacks travel
(:mod:`tvc.remote.objects`); the order and the resume rule are in :mod:`tvc.remote.sync`.
"""

from tvc.remote.sync import Transfer, clone, fetch, pull, push
from tvc.remote.transport import HttpTransport, PathTransport, Transport, open_transport

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
