"""A backend in a local directory: the embedded default.

Objects are files; ``put`` goes through :mod:`tvc.store.durable`, so a crash leaves either the
whole object or a ``*.tmp`` file that is not listed and that gc removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tvc.store import durable
from tvc.store.backends.base import Backend, NotFound


class LocalBackend(Backend):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            durable.make_dirs(self.root)
        except OSError as exc:
            raise durable.storage_error(exc, f"cannot create {self.root}") from exc

    def _path(self, name: str) -> Path:
        return self.root / name

    def local_path(self, name: str) -> Path | None:
        return self._path(name)

    def _put(self, name: str, data: bytes | Path) -> None:
        dest = self._path(name)
        if isinstance(data, Path):
            try:
                same_fs = data.stat().st_dev == self.root.stat().st_dev
            except OSError as exc:
                raise durable.storage_error(exc, f"cannot read {data}") from exc
            if same_fs:
                # The caller fsynced its temp file; a rename is all that is left to do.
                durable.move_into_place(data, dest)
                return
            with durable.atomic_file(dest) as out, open(data, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
            return
        durable.write_bytes(dest, data)

    def _get(self, name: str, offset: int, length: int | None) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError as exc:
            raise NotFound(f"no object {name} in {self.root}") from exc
        except OSError as exc:
            raise durable.storage_error(exc, f"cannot read {name}") from exc

    def _exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def _size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(f"no object {name} in {self.root}") from exc

    def _mtime(self, name: str) -> float:
        try:
            return self._path(name).stat().st_mtime
        except FileNotFoundError as exc:
            raise NotFound(f"no object {name} in {self.root}") from exc

    def _list(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root)
            for fn in files:
                if fn.endswith(durable.TMP_SUFFIX) or fn.startswith("."):
                    continue
                yield (rel / fn).as_posix()

    def _delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))

    def temp_files(self) -> list[Path]:
        """Leftovers of interrupted writes (for gc)."""
        return [p for p in self.root.rglob(f"*{durable.TMP_SUFFIX}") if p.is_file()]
