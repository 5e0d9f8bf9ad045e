"""The transport: one small interface between a registry and its remote, two implementations.

:class:`Transport` is everything push, pull, fetch and clone ask of the other side — which
versions and objects it has, packs in and out, a lease, and recording versions with branch moves.
:class:`PathTransport` talks to another registry directory by calling the receiving code
directly (no HTTP); :class:`HttpTransport` talks to ``tvc server``, which runs that same code.
So the algorithms in :mod:`tvc.remote.sync` and their tests run unchanged over both.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tvc import errors
from tvc.errors import AccessError, StorageError, TvcError, UsageError
from tvc.remote import history, objects, record
from tvc.repo.meta import default_author


class Transport(abc.ABC):
    url: str

    @abc.abstractmethod
    def refs(self, models: list[str] | None = None) -> list[dict[str, Any]]:
        """Branches and tags: [{model, kind, name, id, number}]."""

    @abc.abstractmethod
    def recorded(self, vids: list[str]) -> set[str]: ...

    @abc.abstractmethod
    def version_infos(self, vids: list[str]) -> dict[str, dict[str, Any]]: ...

    @abc.abstractmethod
    def ancestry(self, heads: list[str]) -> list[str]:
        """Versions reachable from ``heads``, parents first."""

    @abc.abstractmethod
    def object_rows(self, vids: list[str]) -> dict[str, dict[str, Any]]:
        """Every object these versions use, with delta bases: {id: {stored_len, base, depth,
        kind}}."""

    @abc.abstractmethod
    def missing(self, ids: list[str]) -> list[str]: ...

    @abc.abstractmethod
    def history(self, model: str) -> list[dict[str, Any]]:
        """State, alias and metric events of ``model`` (:mod:`tvc.remote.history`)."""

    @abc.abstractmethod
    def put_pack(self, name: str, path: Path, lease: str | None) -> dict[str, Any]:
        """Send the transfer pack at ``path`` (left in place); the receiver verifies and
        indexes it."""

    @abc.abstractmethod
    def get_pack(self, ids: list[str], staging: Path) -> tuple[str, Path]:
        """A transfer pack of ``ids`` from the other side, as an unverified temp file."""

    @abc.abstractmethod
    def take_lease(self) -> str: ...

    @abc.abstractmethod
    def drop_lease(self, lease: str) -> None: ...

    @abc.abstractmethod
    def record(self, model: str, versions: list[str], **kw: Any) -> dict[str, Any]:
        """``record.record_versions`` on the other side; ``moves`` as [[branch, expected,
        head]]."""

    def object_info(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Rows of these objects and of their delta bases (for a lazy clone's reads)."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PathTransport(Transport):
    """Another registry directory, opened in this process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from tvc.registry import ModelRegistry

        self.url = str(Path(path).absolute())
        self.repo = ModelRegistry(path)

    def close(self) -> None:
        self.repo.close()

    def refs(self, models=None):
        return record.list_refs(self.repo, models)

    def recorded(self, vids):
        return record.recorded(self.repo, vids)

    def version_infos(self, vids):
        return record.version_infos(self.repo, vids)

    def ancestry(self, heads):
        return record.ancestry(self.repo, heads)

    def object_rows(self, vids):
        return rows_json(self.repo, vids)

    def object_info(self, ids):
        return info_json(self.repo, ids)

    def missing(self, ids):
        return objects.missing(self.repo.engine, ids)

    def history(self, model):
        return history.collect(self.repo, model)

    def put_pack(self, name, path, lease):
        dest = self.repo.dir / "tmp"
        fd, tmp = objects.temp_file(dest)
        os.close(fd)
        shutil.copyfile(path, tmp)
        got = objects.receive_pack(self.repo, tmp, name, lease=lease)
        return {"name": got.name, "objects": got.objects, "new": got.new, "bytes": got.bytes}

    def get_pack(self, ids, staging):
        name, path, _size = objects.write_pack(self.repo, ids, self.repo.dir / "tmp")
        fd, tmp = objects.temp_file(staging)
        os.close(fd)
        try:
            shutil.move(path, tmp)
        except OSError as exc:
            raise StorageError(f"cannot copy a pack from {self.url}: {exc}") from exc
        return name, tmp

    def take_lease(self):
        return objects.take_lease(self.repo, f"push from {os.uname().nodename}:{os.getpid()}")

    def drop_lease(self, lease):
        objects.drop_lease(self.repo, lease)

    def record(self, model, versions, **kw):
        moves = [record.Move(*m) for m in kw.pop("moves", [])]
        got = record.record_versions(
            self.repo, model, versions, moves=moves, actor=default_author(), **kw
        )
        return got.to_json()


def rows_json(repo, vids: Iterable[str]) -> dict[str, dict[str, Any]]:
    return info_json(repo, record.objects_of(repo, vids))


def info_json(repo, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    rows = objects.with_bases(repo.engine, ids)
    return {
        i: {"stored_len": r.stored_len, "base": r.base, "depth": r.depth, "kind": r.kind}
        for i, r in rows.items()
    }


# -- HTTP ------------------------------------------------------------------------------------
_BY_CODE = {}


def _error_classes(cls=TvcError):
    for sub in cls.__subclasses__():
        _BY_CODE.setdefault(sub.exit_code, sub)
        _error_classes(sub)


def error_from(status: int, body: Any) -> TvcError:
    """The TvcError a server's error answer stands for (same class by exit code)."""
    if not _BY_CODE:
        _error_classes()
    msg = body.get("error") if isinstance(body, dict) else None
    code = body.get("exit_code") if isinstance(body, dict) else None
    if status in (401, 403):
        return AccessError(msg or f"access denied (HTTP {status})")
    cls = _BY_CODE.get(code, TvcError) if isinstance(code, int) else None
    if cls is None:
        return StorageError(f"the server answered HTTP {status}: {str(body)[:200]}")
    return cls(msg or f"HTTP {status}")


class HttpTransport(Transport):
    """A ``tvc server``: JSON for questions, a pack stream each way for objects."""

    API = "/api/v1"

    def __init__(self, url: str, token: str | None = None) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - extras
            raise UsageError(
                "http remotes need the server extra: pip install 'tvc[server]'"
            ) from exc
        self._httpx = httpx
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(
            base_url=self.url + self.API,
            headers=headers,
            timeout=httpx.Timeout(600.0, connect=10.0),
        )

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.client.request(method, path, **kw)
        except self._httpx.HTTPError as exc:
            raise StorageError(f"cannot reach {self.url}: {exc}") from exc
        return self._answer(resp)

    def _answer(self, resp) -> Any:
        try:
            body = resp.json()
        except ValueError:
            body = resp.text[:200]
        if resp.status_code >= 400:
            raise error_from(resp.status_code, body)
        return body

    def refs(self, models=None):
        params = [("model", m) for m in models] if models else None
        return self._call("GET", "/refs", params=params)["refs"]

    def recorded(self, vids):
        out: set[str] = set()
        for i in range(0, len(vids), objects.BATCH):
            body = self._call(
                "POST", "/versions/recorded", json={"ids": vids[i : i + objects.BATCH]}
            )
            out.update(body["recorded"])
        return out

    def version_infos(self, vids):
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(vids), objects.BATCH):
            body = self._call("POST", "/versions/info", json={"ids": vids[i : i + objects.BATCH]})
            out.update(body["versions"])
        return out

    def ancestry(self, heads):
        return self._call("POST", "/versions/ancestry", json={"ids": heads})["versions"]

    def object_rows(self, vids):
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(vids), 500):
            body = self._call("POST", "/versions/objects", json={"ids": vids[i : i + 500]})
            out.update(body["objects"])
        return out

    def object_info(self, ids):
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), objects.BATCH):
            body = self._call("POST", "/objects/info", json={"ids": ids[i : i + objects.BATCH]})
            out.update(body["objects"])
        return out

    def missing(self, ids):
        out: list[str] = []
        for i in range(0, len(ids), objects.BATCH):
            body = self._call("POST", "/objects/missing", json={"ids": ids[i : i + objects.BATCH]})
            out.extend(body["missing"])
        return out

    def history(self, model):
        return self._call("GET", "/history", params={"model": model})["events"]

    def put_pack(self, name, path, lease):
        def body():
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    yield block

        headers = {"Content-Length": str(path.stat().st_size)}
        if lease:
            headers["X-Tvc-Lease"] = lease
        return self._call("PUT", f"/packs/{name}", content=body(), headers=headers)

    def get_pack(self, ids, staging):
        try:
            with self.client.stream("POST", "/objects/pack", json={"ids": ids}) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._answer(resp)
                name = objects.check_pack_name(resp.headers.get("X-Tvc-Pack", ""))
                path = objects.save_stream(resp.iter_bytes(1 << 20), staging)
        except self._httpx.HTTPError as exc:
            raise StorageError(f"cannot reach {self.url}: {exc}") from exc
        return name, path

    def take_lease(self):
        return self._call("POST", "/uploads")["lease"]

    def drop_lease(self, lease):
        with contextlib.suppress(TvcError):
            self._call("DELETE", f"/uploads/{lease}")

    def record(self, model, versions, **kw):
        return self._call("POST", "/record", json={"model": model, "versions": versions, **kw})

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """Any other endpoint under ``/api/v1`` (the registry's commands, for
        :mod:`tvc.remote.client`); a server's error is raised as the TvcError it stands for."""
        return self._call(method, path, **kw)

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/whoami")

    def tokens(self, method: str, path: str = "", **kw: Any) -> Any:
        """The server's token admin endpoints (an admin token)."""
        return self._call(method, "/tokens" + path, **kw)


def is_url(where: str) -> bool:
    return where.startswith(("http://", "https://"))


def open_transport(where: str, token: str | None = None) -> Transport:
    """A path or an ``http(s)://`` URL; an http remote's token comes from ``token``,
    ``TVC_TOKEN``, or the login stored for it."""
    if is_url(where):
        from tvc.remote.config import token_for

        return HttpTransport(where, token or token_for(where))
    if "://" in where:
        raise UsageError(f"unsupported remote {where!r}: use a path or an http(s):// URL")
    return PathTransport(where)


__all__ = ["HttpTransport", "PathTransport", "Transport", "errors", "open_transport"]
