"""Fault injection by wrapping a backend (never by mocking it).

``FailingBackend`` fails chosen operations after N successes; ``BitFlipBackend`` flips one bit
(``^ 0xFF`` on a byte — writing a fixed byte would be a no-op one time in 256) in what ``get``
returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tvc.errors import StorageError
from tvc.store.backends.base import Backend


class Wrapper(Backend):
    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def _put(self, name: str, data: bytes | Path) -> None:
        self.inner._put(name, data)

    def _get(self, name: str, offset: int, length: int | None) -> bytes:
        return self.inner._get(name, offset, length)

    def _exists(self, name: str) -> bool:
        return self.inner._exists(name)

    def _size(self, name: str) -> int:
        return self.inner._size(name)

    def _mtime(self, name: str) -> float:
        return self.inner._mtime(name)

    def _list(self, prefix: str) -> Iterator[str]:
        return self.inner._list(prefix)

    def _delete(self, name: str) -> None:
        self.inner._delete(name)

    def local_path(self, name: str):
        return self.inner.local_path(name)


class FailingBackend(Wrapper):
    """``plan`` maps an operation to a string like "rrE": r = run normally, E = raise."""

    def __init__(self, inner: Backend, **plan: str) -> None:
        super().__init__(inner)
        self.plan = {op: list(p) for op, p in plan.items()}

    def _step(self, op: str) -> None:
        steps = self.plan.get(op)
        if steps and steps.pop(0) == "E":
            raise StorageError(f"injected {op} failure: disk full")

    def _put(self, name, data):
        self._step("put")
        super()._put(name, data)

    def _get(self, name, offset, length):
        self._step("get")
        return super()._get(name, offset, length)


class BitFlipBackend(Wrapper):
    def __init__(self, inner: Backend, at: int = 0) -> None:
        super().__init__(inner)
        self.at = at

    def _get(self, name, offset, length):
        data = bytearray(super()._get(name, offset, length))
        if data:
            data[self.at % len(data)] ^= 0xFF
        return bytes(data)
