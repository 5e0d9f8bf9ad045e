"""A backend in a dict: for tests and for staging."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tvc.store.backends.base import Backend, NotFound


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._times: dict[str, float] = {}
        self._lock = threading.Lock()

    def _put(self, name: str, data: bytes | Path) -> None:
        blob = data.read_bytes() if isinstance(data, Path) else bytes(data)
        with self._lock:
            self._objects[name] = blob
            self._times[name] = time.time()

    def _get(self, name: str, offset: int, length: int | None) -> bytes:
        with self._lock:
            blob = self._objects.get(name)
        if blob is None:
            raise NotFound(f"no object {name}")
        end = len(blob) if length is None else offset + length
        return blob[offset:end]

    def _exists(self, name: str) -> bool:
        with self._lock:
            return name in self._objects

    def _size(self, name: str) -> int:
        with self._lock:
            if name not in self._objects:
                raise NotFound(f"no object {name}")
            return len(self._objects[name])

    def _mtime(self, name: str) -> float:
        with self._lock:
            if name not in self._times:
                raise NotFound(f"no object {name}")
            return self._times[name]

    def _list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            names = [n for n in self._objects if n.startswith(prefix)]
        return iter(names)

    def _delete(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name, None)
            self._times.pop(name, None)
